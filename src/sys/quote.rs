//! Quoting for `sh`: a word that a shell reads back as exactly itself.

/// Quotes a string for `sh` (single quotes; a single quote inside becomes `'\\''`).
pub fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_survives_quotes() {
        assert_eq!(quote("a'b c"), r"'a'\''b c'");
    }
}
