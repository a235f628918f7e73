//! Reads systemd unit files (the syntax of systemd.syntax(7)) so tests can
//! check what the shipped kilnd.service asks for, and expand its Exec* lines
//! into argv the way systemd does for `${VAR}` from `Environment=`.
//! Pure parsing; reads no files itself.

use std::fmt;

/// One `Key=value` assignment, in file order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub section: String,
    pub key: String,
    pub value: String,
    pub line: usize,
}

/// A parsed unit file.
#[derive(Debug, Clone, Default)]
pub struct UnitFile {
    pub entries: Vec<Entry>,
}

/// Why a unit file or an Exec line could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UnitError {
    /// An assignment before any `[Section]` header.
    NoSection { line: usize },
    /// A line that is neither a comment, a header nor `Key=value`.
    Malformed { line: usize, text: String },
    /// An Exec line with an unclosed quote.
    UnclosedQuote { value: String },
    /// `${VAR}` with no matching `Environment=`.
    UnknownVariable { name: String },
}

impl fmt::Display for UnitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UnitError::NoSection { line } => {
                write!(
                    f,
                    "line {line}: setting before any [Section]; add a section header above it"
                )
            }
            UnitError::Malformed { line, text } => {
                write!(
                    f,
                    "line {line}: {text:?} is not Key=value; fix or comment it with #"
                )
            }
            UnitError::UnclosedQuote { value } => {
                write!(f, "unclosed quote in {value:?}; close it")
            }
            UnitError::UnknownVariable { name } => write!(
                f,
                "${{{name}}} is used but no Environment= sets it; add Environment={name}=..."
            ),
        }
    }
}

impl std::error::Error for UnitError {}

impl UnitFile {
    /// Parses unit file text. Continuation lines (`\` at the end) are joined.
    pub fn parse(text: &str) -> Result<UnitFile, UnitError> {
        let mut entries = Vec::new();
        let mut section: Option<String> = None;
        let mut pending: Option<(usize, String)> = None;
        for (idx, raw) in text.lines().enumerate() {
            let lineno = idx + 1;
            let line = raw.trim();
            let (start, mut logical) = match pending.take() {
                Some((start, mut acc)) => {
                    // Comment lines inside a continuation are skipped.
                    if line.starts_with('#') || line.starts_with(';') {
                        pending = Some((start, acc));
                        continue;
                    }
                    acc.push(' ');
                    acc.push_str(line);
                    (start, acc)
                }
                None => {
                    if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
                        continue;
                    }
                    (lineno, line.to_string())
                }
            };
            if let Some(stripped) = logical.strip_suffix('\\') {
                logical = stripped.trim_end().to_string();
                pending = Some((start, logical));
                continue;
            }
            if logical.starts_with('[') && logical.ends_with(']') {
                section = Some(logical[1..logical.len() - 1].to_string());
                continue;
            }
            let Some((key, value)) = logical.split_once('=') else {
                return Err(UnitError::Malformed {
                    line: start,
                    text: logical,
                });
            };
            let Some(sec) = section.clone() else {
                return Err(UnitError::NoSection { line: start });
            };
            entries.push(Entry {
                section: sec,
                key: key.trim().to_string(),
                value: value.trim().to_string(),
                line: start,
            });
        }
        if let Some((start, logical)) = pending {
            return Err(UnitError::Malformed {
                line: start,
                text: logical,
            });
        }
        Ok(UnitFile { entries })
    }

    /// All values of `key` in `section`, in order.
    pub fn values(&self, section: &str, key: &str) -> Vec<&str> {
        self.entries
            .iter()
            .filter(|e| e.section == section && e.key == key)
            .map(|e| e.value.as_str())
            .collect()
    }

    /// The effective value of a single-valued setting (the last one wins).
    pub fn get(&self, section: &str, key: &str) -> Option<&str> {
        self.values(section, key).last().copied()
    }

    /// `Environment=` assignments of [Service], later ones overriding.
    pub fn environment(&self) -> Vec<(String, String)> {
        let mut env: Vec<(String, String)> = Vec::new();
        for v in self.values("Service", "Environment") {
            for word in split_words(v).unwrap_or_default() {
                if let Some((k, val)) = word.split_once('=') {
                    env.retain(|(ek, _)| ek != k);
                    env.push((k.to_string(), val.to_string()));
                }
            }
        }
        env
    }

    /// Expands an Exec* value into argv: drops the `@-:+!` prefixes and
    /// substitutes `${VAR}` from `Environment=` and from `extra` (variables
    /// systemd sets itself, such as STATE_DIRECTORY).
    pub fn exec_argv(&self, value: &str, extra: &[(&str, &str)]) -> Result<Vec<String>, UnitError> {
        let cmd = value.trim_start_matches(['@', '-', ':', '+', '!']);
        let mut env = self.environment();
        for (k, v) in extra {
            env.push((k.to_string(), v.to_string()));
        }
        split_words(cmd)?
            .into_iter()
            .map(|w| substitute(&w, &env))
            .collect()
    }
}

/// Splits on whitespace, honouring double and single quotes.
fn split_words(s: &str) -> Result<Vec<String>, UnitError> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut quote: Option<char> = None;
    for c in s.chars() {
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => cur.push(c),
            None if c == '"' || c == '\'' => {
                quote = Some(c);
                in_word = true;
            }
            None if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            None => {
                cur.push(c);
                in_word = true;
            }
        }
    }
    if quote.is_some() {
        return Err(UnitError::UnclosedQuote {
            value: s.to_string(),
        });
    }
    if in_word {
        words.push(cur);
    }
    Ok(words)
}

fn substitute(word: &str, env: &[(String, String)]) -> Result<String, UnitError> {
    let mut out = String::new();
    let mut rest = word;
    while let Some(pos) = rest.find("${") {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 2..];
        let Some(end) = after.find('}') else {
            out.push_str(&rest[pos..]);
            return Ok(out);
        };
        let name = &after[..end];
        let val = env
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .ok_or_else(|| UnitError::UnknownVariable {
                name: name.to_string(),
            })?;
        out.push_str(val);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const UNIT: &str = "# comment\n[Unit]\nDescription=demo\n\n[Service]\n\
        Environment=A=1 \"B=two words\"\nEnvironment=A=3\n\
        ExecStart=-/usr/bin/demo --a ${A} \\\n  --b \"${B}\" --s ${STATE_DIRECTORY}\n\
        DeviceAllow=char-drm rw\nDeviceAllow=char-accel rw\n";

    #[test]
    fn parses_sections_repeats_and_continuations() {
        let u = UnitFile::parse(UNIT).unwrap();
        assert_eq!(u.get("Unit", "Description"), Some("demo"));
        assert_eq!(
            u.values("Service", "DeviceAllow"),
            ["char-drm rw", "char-accel rw"]
        );
        assert_eq!(u.get("Service", "Environment"), Some("A=3"));
        assert_eq!(u.get("Unit", "ExecStart"), None);
        let exec = u.entries.iter().find(|e| e.key == "ExecStart").unwrap();
        assert_eq!(exec.line, 8);
    }

    #[test]
    fn expands_exec_lines_like_systemd() {
        let u = UnitFile::parse(UNIT).unwrap();
        let argv = u
            .exec_argv(
                u.get("Service", "ExecStart").unwrap(),
                &[("STATE_DIRECTORY", "/var/lib/demo")],
            )
            .unwrap();
        assert_eq!(
            argv,
            [
                "/usr/bin/demo",
                "--a",
                "3",
                "--b",
                "two words",
                "--s",
                "/var/lib/demo"
            ]
        );
    }

    #[test]
    fn unknown_variables_and_bad_lines_are_errors() {
        let u = UnitFile::parse(UNIT).unwrap();
        let err = u.exec_argv("/bin/x ${NOPE}", &[]).unwrap_err();
        assert_eq!(
            err,
            UnitError::UnknownVariable {
                name: "NOPE".into()
            }
        );
        assert!(err.to_string().contains("Environment=NOPE"));
        assert_eq!(
            UnitFile::parse("Key=1\n").unwrap_err(),
            UnitError::NoSection { line: 1 }
        );
        assert!(matches!(
            UnitFile::parse("[A]\njust words\n").unwrap_err(),
            UnitError::Malformed { line: 2, .. }
        ));
        assert!(matches!(
            u.exec_argv("/bin/x \"open", &[]).unwrap_err(),
            UnitError::UnclosedQuote { .. }
        ));
    }
}
