//! `fnmatch(3)`-style patterns for `--ignore-missing`, matched against a soname.
//!
//! Supported: `*` (any run of bytes, including none), `?` (one byte), `[abc]`, `[a-z]` and
//! `[!abc]` (or `[^abc]`) classes, and `\` to match the next byte literally. There are no path
//! separators in a soname, so `*` may match anything. A `[` without a closing `]` matches itself,
//! as in Python's `fnmatch` (which autoPatchelfHook uses).

/// A compiled pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    text: Vec<u8>,
    tokens: Vec<Token>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Byte(u8),
    AnyByte,
    AnyRun,
    Class {
        negated: bool,
        ranges: Vec<(u8, u8)>,
    },
}

impl Pattern {
    /// Compiles `pattern`; every byte string is a valid pattern.
    pub fn new(pattern: impl AsRef<[u8]>) -> Self {
        let text = pattern.as_ref().to_vec();
        let mut tokens = Vec::new();
        let mut index = 0;
        while index < text.len() {
            let byte = text[index];
            index += 1;
            match byte {
                b'*' => {
                    if tokens.last() != Some(&Token::AnyRun) {
                        tokens.push(Token::AnyRun);
                    }
                }
                b'?' => tokens.push(Token::AnyByte),
                b'\\' if index < text.len() => {
                    tokens.push(Token::Byte(text[index]));
                    index += 1;
                }
                b'[' => match parse_class(&text[index..]) {
                    Some((token, used)) => {
                        tokens.push(token);
                        index += used;
                    }
                    None => tokens.push(Token::Byte(b'[')),
                },
                other => tokens.push(Token::Byte(other)),
            }
        }
        Self { text, tokens }
    }

    /// The pattern as given.
    pub fn as_bytes(&self) -> &[u8] {
        &self.text
    }

    /// Whether `name` matches the whole pattern.
    pub fn matches(&self, name: &[u8]) -> bool {
        // Iterative matching with backtracking to the last `*`: linear in practice, no recursion.
        let (mut token_index, mut name_index) = (0, 0);
        let mut backtrack: Option<(usize, usize)> = None;
        while name_index < name.len() {
            let step = match self.tokens.get(token_index) {
                Some(Token::AnyRun) => {
                    backtrack = Some((token_index, name_index));
                    token_index += 1;
                    continue;
                }
                Some(Token::AnyByte) => true,
                Some(Token::Byte(byte)) => *byte == name[name_index],
                Some(Token::Class { negated, ranges }) => {
                    let byte = name[name_index];
                    let inside = ranges
                        .iter()
                        .any(|&(low, high)| low <= byte && byte <= high);
                    inside != *negated
                }
                None => false,
            };
            if step {
                token_index += 1;
                name_index += 1;
            } else if let Some((star, matched)) = backtrack {
                token_index = star + 1;
                name_index = matched + 1;
                backtrack = Some((star, matched + 1));
            } else {
                return false;
            }
        }
        self.tokens[token_index..]
            .iter()
            .all(|token| *token == Token::AnyRun)
    }
}

/// Parses a class after its `[`; returns the token and the number of bytes used (with the `]`).
fn parse_class(rest: &[u8]) -> Option<(Token, usize)> {
    let mut index = 0;
    let negated = matches!(rest.first(), Some(b'!' | b'^'));
    if negated {
        index += 1;
    }
    let mut ranges = Vec::new();
    let mut first = true;
    loop {
        let &byte = rest.get(index)?;
        // A `]` right after the opening (or the negation) is a member, not the end.
        if byte == b']' && !first {
            return Some((Token::Class { negated, ranges }, index + 1));
        }
        first = false;
        if rest.get(index + 1) == Some(&b'-') && rest.get(index + 2).is_some_and(|&b| b != b']') {
            ranges.push((byte, rest[index + 2]));
            index += 3;
        } else {
            ranges.push((byte, byte));
            index += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Pattern;

    fn matches(pattern: &str, name: &str) -> bool {
        Pattern::new(pattern).matches(name.as_bytes())
    }

    #[test]
    fn literals_and_stars() {
        assert!(matches("libcuda.so.1", "libcuda.so.1"));
        assert!(!matches("libcuda.so.1", "libcuda.so.10"));
        assert!(matches("*", ""));
        assert!(matches("*", "libanything.so"));
        assert!(matches("libcuda*", "libcuda.so.1"));
        assert!(matches("*.so.1", "libcuda.so.1"));
        assert!(!matches("*.so.1", "libcuda.so.12"));
        assert!(matches("lib*a*.so*", "libcudart.so.12"));
        assert!(matches("**x", "x"));
        assert!(!matches("a*b", "acbd"));
    }

    #[test]
    fn question_marks_classes_and_escapes() {
        assert!(matches("libc?da.so", "libcuda.so"));
        assert!(!matches("libc?da.so", "libcda.so"));
        assert!(matches("libGL[XU].so.*", "libGLX.so.0"));
        assert!(!matches("libGL[XU].so.*", "libGLE.so.0"));
        assert!(matches("lib[!a-c]x", "libdx"));
        assert!(!matches("lib[!a-c]x", "libbx"));
        assert!(matches("lib[]]x", "lib]x"));
        assert!(matches("lib[x", "lib[x"));
        assert!(matches("lib\\*", "lib*"));
        assert!(!matches("lib\\*", "libx"));
    }
}
