//! The text of `print`: nested brackets, one innermost row per line.

/// Appends `values` (row-major over `shape`) as nested lists: `[1, 2]` for rank 1,
/// `[[1, 2],\n [3, 4]]` for rank 2, and so on; a rank-0 tensor prints its single value.
pub(crate) fn nested(text: &mut String, shape: &[usize], values: &[String]) {
    fn level(text: &mut String, shape: &[usize], values: &[String], depth: usize) {
        let Some((&size, rest)) = shape.split_first() else {
            if let Some(value) = values.first() {
                text.push_str(value);
            }
            return;
        };
        let chunk: usize = rest.iter().product();
        text.push('[');
        for index in 0..size {
            if index > 0 {
                if rest.is_empty() {
                    text.push_str(", ");
                } else {
                    text.push_str(",\n");
                    // A blank line between blocks of rank 3 and more.
                    for _ in 1..rest.len() {
                        text.push('\n');
                    }
                    for _ in 0..=depth {
                        text.push(' ');
                    }
                }
            }
            let start = index * chunk;
            level(text, rest, &values[start..start + chunk], depth + 1);
        }
        text.push(']');
    }
    level(text, shape, values, 0);
}

#[cfg(test)]
mod tests {
    use super::nested;

    fn show(shape: &[usize]) -> String {
        let count: usize = shape.iter().product();
        let values: Vec<String> = (0..count).map(|v| v.to_string()).collect();
        let mut text = String::new();
        nested(&mut text, shape, &values);
        text
    }

    #[test]
    fn formats() {
        assert_eq!(show(&[3]), "[0, 1, 2]");
        assert_eq!(show(&[2, 2]), "[[0, 1],\n [2, 3]]");
        assert_eq!(show(&[2, 1, 2]), "[[[0, 1]],\n\n [[2, 3]]]");
        assert_eq!(show(&[]), "0");
    }
}
