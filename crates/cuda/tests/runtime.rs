//! The runtime on whatever this machine has: without a GPU, clear errors; with one, a real
//! upload → launch → download round trip checked element by element.

use anybit_cuda::{compile, Gpu, KernelArgument, Launch, RuntimeError};

const AXPY: &str = r#"
extern "C" __global__ void axpy(const float* x, float* y, int n, int a) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) y[i] = a * x[i] + y[i];
}
"#;

#[test]
fn launches_a_kernel_or_explains_why_not() {
    let gpu = match Gpu::open(0) {
        Ok(gpu) => gpu,
        Err(error @ (RuntimeError::NoDriver | RuntimeError::DriverFailed(_))) => {
            let message = error.to_string();
            assert!(message.contains("driver"), "{message}");
            return;
        }
        Err(error) => panic!("unexpected: {error}"),
    };
    let module = compile(AXPY, "axpy", gpu.target()).unwrap();
    let kernel = gpu.load(&module, "axpy").unwrap();
    let n = 1000usize;
    let x: Vec<f32> = (0..n).map(|i| (i as f32 * 0.37).sin()).collect();
    let y: Vec<f32> = (0..n).map(|i| (i as f32 * 0.11).cos()).collect();
    let bytes =
        |values: &[f32]| -> Vec<u8> { values.iter().flat_map(|v| v.to_le_bytes()).collect() };
    let x_device = gpu.upload(&bytes(&x)).unwrap();
    // One spare element past n, poisoned, must stay untouched.
    let mut y_padded = y.clone();
    y_padded.push(f32::NAN);
    let y_device = gpu.upload(&bytes(&y_padded)).unwrap();
    let launch = Launch {
        grid: [n.div_ceil(128) as u32, 1, 1],
        block: [128, 1, 1],
        dynamic_shared_bytes: 0,
    };
    let arguments = [
        KernelArgument::Buffer(&x_device),
        KernelArgument::Buffer(&y_device),
        KernelArgument::I32(n as i32),
        KernelArgument::I32(3),
    ];
    gpu.launch(&kernel, launch, &arguments).unwrap();
    let result: Vec<f32> = gpu
        .download(&y_device)
        .unwrap()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    // NVRTC contracts `a * x + y` into one fused multiply-add.
    for i in 0..n {
        assert_eq!(result[i], 3.0f32.mul_add(x[i], y[i]), "element {i}");
    }
    assert!(result[n].is_nan(), "element past n was written");
    let wrong_target = if gpu.target() == anybit_cuda::Target::Sm80 {
        anybit_cuda::Target::Sm90a
    } else {
        anybit_cuda::Target::Sm80
    };
    let other = compile(AXPY, "axpy", wrong_target).unwrap();
    assert!(matches!(
        gpu.load(&other, "axpy"),
        Err(RuntimeError::TargetMismatch { .. })
    ));
}

/// Stores the last 4-bit element of an `n`-byte buffer the way generated code stores sub-byte
/// elements: atomically, through the 32-bit word that holds it.
const LAST_NIBBLE: &str = r#"
extern "C" __global__ void last_nibble(unsigned char* p, int n) {
    unsigned long long bit = (unsigned long long)p * 8 + (2ull * n - 1) * 4;
    unsigned int* word = (unsigned int*)((bit >> 5) << 2);
    int shift = (int)(bit & 31);
    atomicAnd(word, ~(0xfu << shift));
    atomicOr(word, 0x9u << shift);
}
"#;

#[test]
fn buffers_whose_length_is_not_whole_words_take_word_stores_at_their_end() {
    let Ok(gpu) = Gpu::open(0) else {
        return; // without a GPU the test above checks the error
    };
    let module = compile(LAST_NIBBLE, "last_nibble", gpu.target()).unwrap();
    let kernel = gpu.load(&module, "last_nibble").unwrap();
    for len in 1..=9usize {
        let bytes: Vec<u8> = (0..len).map(|i| 0x31 + 0x22 * i as u8).collect();
        let mut buffer = gpu.upload(&bytes).unwrap();
        assert_eq!(buffer.len(), len);
        let launch = Launch {
            grid: [1, 1, 1],
            block: [1, 1, 1],
            dynamic_shared_bytes: 0,
        };
        let arguments = [
            KernelArgument::Buffer(&buffer),
            KernelArgument::I32(len as i32),
        ];
        gpu.launch(&kernel, launch, &arguments).unwrap();
        let mut expected = bytes.clone();
        expected[len - 1] = (expected[len - 1] & 0x0f) | 0x90;
        assert_eq!(gpu.download(&buffer).unwrap(), expected, "{len} bytes");
        // A write must match the buffer's length, padding or not.
        let error = gpu.write(&mut buffer, &vec![0; len + 1]).unwrap_err();
        assert!(error.to_string().contains("cannot overwrite"), "{error}");
    }
}
