//! Turns the annotated default config (`configs/kiln.toml`) into the
//! kiln.toml(5) man page, so the page documents exactly the shipped defaults.
//! Pure text in, text out; the caller does the file I/O.
//!
//! Conventions read from the config file:
//! - the comment block at the top of the file (up to the first blank line) is
//!   the page's DESCRIPTION;
//! - a comment block directly above `[section]` or `key = value` documents it,
//!   and a trailing `# comment` on a key line is appended to its text;
//! - a commented-out assignment (`#key = value`) shows the built-in default
//!   of a setting the file leaves unset (the style of configs/kiln.toml);
//! - a blank line ends a comment block; an empty `#` line starts a paragraph.

use std::fmt;

use crate::roff::{escape, escape_arg};

/// The annotated config, as documented settings grouped by table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigDoc {
    /// Paragraphs of the file's header comment.
    pub header: Vec<String>,
    /// Tables in file order; settings before the first header have `name: None`.
    pub sections: Vec<Section>,
}

/// One TOML table (`[name]` or `[[name]]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Section {
    pub name: Option<String>,
    /// True for an array of tables (`[[name]]`).
    pub array: bool,
    pub doc: Vec<String>,
    pub keys: Vec<Key>,
}

/// One documented setting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Key {
    pub name: String,
    /// The value as written in the file (the built-in default if commented out).
    pub value: String,
    pub doc: Vec<String>,
    /// Written as `#key = value`: the file leaves it at its built-in default.
    pub commented_out: bool,
}

/// Why the annotated config cannot be documented.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigDocError {
    /// The file is not valid TOML.
    InvalidToml { message: String },
    /// A value that opens a bracket or a multi-line string never closes.
    Unterminated { line: usize, key: String },
    /// The file holds no settings at all.
    NoSettings,
}

impl fmt::Display for ConfigDocError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigDocError::InvalidToml { message } => write!(
                f,
                "the default config is not valid TOML: {message}; fix configs/kiln.toml (check it with `kilnd check-config`)"
            ),
            ConfigDocError::Unterminated { line, key } => write!(
                f,
                "line {line}: the value of `{key}` is never closed; close its bracket or triple quote"
            ),
            ConfigDocError::NoSettings => write!(
                f,
                "the default config holds no settings; write the defaults (commented) into configs/kiln.toml"
            ),
        }
    }
}

impl std::error::Error for ConfigDocError {}

/// Parses the annotated config. The whole file must be valid TOML.
pub fn parse_annotated(text: &str) -> Result<ConfigDoc, ConfigDocError> {
    toml::from_str::<toml::Table>(text).map_err(|e| ConfigDocError::InvalidToml {
        message: e.to_string().trim().replace('\n', " "),
    })?;

    let lines: Vec<&str> = text.lines().collect();
    let mut doc = ConfigDoc {
        header: Vec::new(),
        sections: vec![Section {
            name: None,
            array: false,
            doc: Vec::new(),
            keys: Vec::new(),
        }],
    };
    let mut pending: Vec<String> = Vec::new();
    let mut i = 0;

    // Header: leading comment lines up to the first blank line.
    while i < lines.len() && lines[i].trim_start().starts_with('#') {
        pending.push(comment_text(lines[i]));
        i += 1;
    }
    if i == lines.len() || lines[i].trim().is_empty() {
        doc.header = paragraphs(&std::mem::take(&mut pending));
    }

    while i < lines.len() {
        let line = lines[i].trim();
        let lineno = i + 1;
        i += 1;
        if line.is_empty() {
            pending.clear();
            continue;
        }
        if let Some(c) = line.strip_prefix('#') {
            if let Some((name, value)) = commented_assignment(c) {
                let current = doc.sections.last_mut().expect("one section always exists");
                current.keys.push(Key {
                    name,
                    value,
                    doc: paragraphs(&std::mem::take(&mut pending)),
                    commented_out: true,
                });
            } else {
                pending.push(comment_text(line));
            }
            continue;
        }
        if line.starts_with('[') {
            let array = line.starts_with("[[");
            let (head, trailing) = split_comment(line);
            let name = head
                .trim()
                .trim_start_matches('[')
                .trim_end_matches(']')
                .trim()
                .to_string();
            if let Some(t) = trailing {
                pending.push(String::new());
                pending.push(t);
            }
            doc.sections.push(Section {
                name: Some(name),
                array,
                doc: paragraphs(&std::mem::take(&mut pending)),
                keys: Vec::new(),
            });
            continue;
        }
        // key = value (TOML already validated, so `=` is present).
        let Some((name, rest)) = line.split_once('=') else {
            pending.clear();
            continue;
        };
        let name = name.trim().to_string();
        let mut value_lines = vec![rest.trim().to_string()];
        while !value_complete(&value_lines.join("\n")) {
            if i >= lines.len() {
                return Err(ConfigDocError::Unterminated {
                    line: lineno,
                    key: name,
                });
            }
            value_lines.push(lines[i].trim().to_string());
            i += 1;
        }
        // Comments inside a multi-line value are dropped; the first line's
        // trailing comment documents the key.
        let mut parts = Vec::new();
        let mut trailing = None;
        for (n, l) in value_lines.iter().enumerate() {
            let (code, comment) = split_comment(l);
            if n == 0 {
                trailing = comment;
            }
            let code = code.trim();
            if !code.is_empty() {
                parts.push(code.to_string());
            }
        }
        let value = parts.join(" ");
        let mut key_doc = std::mem::take(&mut pending);
        if let Some(t) = trailing {
            // A trailing comment is its own paragraph.
            key_doc.push(String::new());
            key_doc.push(t);
        }
        let current = doc.sections.last_mut().expect("one section always exists");
        current.keys.push(Key {
            name,
            value,
            doc: paragraphs(&key_doc),
            commented_out: false,
        });
    }

    if doc.sections.first().is_some_and(|s| s.keys.is_empty()) {
        doc.sections.remove(0);
    }
    if doc.sections.iter().all(|s| s.keys.is_empty()) {
        return Err(ConfigDocError::NoSettings);
    }
    Ok(doc)
}

/// Renders the kiln.toml(5) page for `version` (the package version).
pub fn render_man(doc: &ConfigDoc, version: &str) -> String {
    let mut m = String::new();
    m.push_str(&format!(
        ".TH KILN.TOML 5 \"\" \"kiln {}\" \"File Formats\"\n",
        escape_arg(version)
    ));
    m.push_str(".SH NAME\nkiln.toml \\- configuration of the Kiln daemon kilnd\n");
    m.push_str(".SH SYNOPSIS\n.B /etc/kiln/kiln.toml\n.br\n.B /etc/kiln/kiln.toml.d/*.toml\n");
    m.push_str(".SH DESCRIPTION\n");
    for (n, p) in doc.header.iter().enumerate() {
        if n > 0 {
            m.push_str(".PP\n");
        }
        m.push_str(&escape(p));
        m.push('\n');
    }
    if !doc.header.is_empty() {
        m.push_str(".PP\n");
    }
    m.push_str(
        "kilnd reads /etc/kiln/kiln.toml, then every *.toml file in /etc/kiln/kiln.toml.d in \
         lexical order; a later file overrides the settings it names. \
         Check a change with \\fBkilnd check\\-config\\fR and apply it with \
         \\fBsystemctl reload kilnd\\fR.\n",
    );
    m.push_str(".SH OPTIONS\n");
    for s in &doc.sections {
        let title = match (&s.name, s.array) {
            (None, _) => "Top level".to_string(),
            (Some(n), false) => format!("[{n}]"),
            (Some(n), true) => format!("[[{n}]]"),
        };
        m.push_str(&format!(".SS \"{}\"\n", escape_arg(&title)));
        for (n, p) in s.doc.iter().enumerate() {
            if n > 0 {
                m.push_str(".PP\n");
            }
            m.push_str(&escape(p));
            m.push('\n');
        }
        for k in &s.keys {
            m.push_str(".TP\n");
            m.push_str(&format!(
                "\\fB{}\\fR = \\fI{}\\fR\n",
                escape(&k.name),
                escape(&k.value)
            ));
            for (n, p) in k.doc.iter().enumerate() {
                if n > 0 {
                    m.push_str(".IP\n");
                }
                m.push_str(&escape(p));
                m.push('\n');
            }
            if k.commented_out {
                if !k.doc.is_empty() {
                    m.push_str(".IP\n");
                }
                m.push_str("The value shown is the built\\-in default.\n");
            } else if k.doc.is_empty() {
                m.push_str("The value shown is the shipped setting.\n");
            }
        }
    }
    m.push_str(
        ".SH FILES\n.TP\n/etc/kiln/kiln.toml\nThe main configuration file (a dpkg conffile).\n",
    );
    m.push_str(
        ".TP\n/etc/kiln/kiln.toml.d/*.toml\nDrop\\-ins applied after it, in lexical order.\n",
    );
    m.push_str(
        ".TP\n/etc/kiln/credentials/\nSecrets, passed to kilnd by systemd as credentials.\n",
    );
    m.push_str(".SH SEE ALSO\n.BR kilnd (8),\n.BR kilnctl (1),\n.BR systemd.exec (5)\n");
    m
}

/// Text of a comment line without `#` and one following space.
fn comment_text(line: &str) -> String {
    let c = line.trim_start().trim_start_matches('#');
    c.strip_prefix(' ').unwrap_or(c).trim_end().to_string()
}

/// Joins comment lines into paragraphs; empty lines separate them.
fn paragraphs(lines: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut cur: Vec<&str> = Vec::new();
    for l in lines {
        if l.trim().is_empty() {
            if !cur.is_empty() {
                out.push(cur.join(" "));
                cur.clear();
            }
        } else {
            cur.push(l.trim());
        }
    }
    if !cur.is_empty() {
        out.push(cur.join(" "));
    }
    out
}

/// `# key = value` where key is a bare TOML key and the value parses as TOML.
fn commented_assignment(comment: &str) -> Option<(String, String)> {
    let (k, v) = comment.split_once('=')?;
    let k = k.trim();
    if k.is_empty()
        || !k
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.')
    {
        return None;
    }
    let (value, _) = split_comment(v.trim());
    let value = value.trim();
    toml::from_str::<toml::Table>(&format!("x = {value}")).ok()?;
    Some((k.to_string(), value.to_string()))
}

/// Splits `text` at the first `#` outside a string: (value, trailing comment).
fn split_comment(text: &str) -> (String, Option<String>) {
    let mut quote: Option<char> = None;
    let mut escaped = false;
    for (idx, c) in text.char_indices() {
        match quote {
            Some(q) => {
                if escaped {
                    escaped = false;
                } else if c == '\\' && q == '"' {
                    escaped = true;
                } else if c == q {
                    quote = None;
                }
            }
            None => match c {
                '"' | '\'' => quote = Some(c),
                '#' => {
                    let comment = text[idx + 1..].trim();
                    let comment = (!comment.is_empty()).then(|| comment.to_string());
                    return (text[..idx].trim_end().to_string(), comment);
                }
                _ => {}
            },
        }
    }
    (text.to_string(), None)
}

/// Whether a (possibly multi-line) value is complete: brackets balanced and
/// no open multi-line string.
fn value_complete(value: &str) -> bool {
    for delim in ["\"\"\"", "'''"] {
        if value.matches(delim).count() % 2 == 1 {
            return false;
        }
    }
    let mut depth: i64 = 0;
    let mut quote: Option<char> = None;
    let mut escaped = false;
    for line in value.lines() {
        let (code, _) = split_comment(line);
        for c in code.chars() {
            match quote {
                Some(q) => {
                    if escaped {
                        escaped = false;
                    } else if c == '\\' && q == '"' {
                        escaped = true;
                    } else if c == q {
                        quote = None;
                    }
                }
                None => match c {
                    '"' | '\'' => quote = Some(c),
                    '[' | '{' => depth += 1,
                    ']' | '}' => depth -= 1,
                    _ => {}
                },
            }
        }
        quote = None;
    }
    depth <= 0
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = r#"# Kiln daemon configuration.
# Edit drop-ins rather than this file.

# Settings of the daemon itself.
[daemon]
# How much kilnd logs: error, warn, info, debug or trace.
log_level = "info"
# Where the gRPC socket lives.
#
# Must be inside /run/kiln.
socket = "/run/kiln/kiln.sock"  # the default path
# metrics_listen = "127.0.0.1:9464"

[memory]
budget = "conservative" # or "aggressive"
devices = [
  "NPU",  # preferred
  "GPU",
]
"#;

    #[test]
    fn parses_header_sections_keys_and_comments() {
        let doc = parse_annotated(SAMPLE).unwrap();
        assert_eq!(
            doc.header,
            vec!["Kiln daemon configuration. Edit drop-ins rather than this file."]
        );
        assert_eq!(doc.sections.len(), 2);
        let d = &doc.sections[0];
        assert_eq!(d.name.as_deref(), Some("daemon"));
        assert_eq!(d.doc, vec!["Settings of the daemon itself."]);
        assert_eq!(d.keys[0].name, "log_level");
        assert_eq!(d.keys[0].value, "\"info\"");
        assert_eq!(
            d.keys[0].doc,
            vec!["How much kilnd logs: error, warn, info, debug or trace."]
        );
        assert_eq!(
            d.keys[1].doc,
            vec![
                "Where the gRPC socket lives.",
                "Must be inside /run/kiln.",
                "the default path"
            ]
        );
        assert!(d.keys[2].commented_out);
        assert_eq!(d.keys[2].name, "metrics_listen");
        assert_eq!(d.keys[2].value, "\"127.0.0.1:9464\"");
        let m = &doc.sections[1];
        assert_eq!(m.keys[0].doc, vec!["or \"aggressive\""]);
        assert_eq!(m.keys[1].name, "devices");
        assert_eq!(m.keys[1].value, "[ \"NPU\", \"GPU\", ]");
    }

    #[test]
    fn hash_inside_string_is_not_a_comment() {
        let doc = parse_annotated("[a]\nx = \"a#b\" # note\n").unwrap();
        assert_eq!(doc.sections[0].keys[0].value, "\"a#b\"");
        assert_eq!(doc.sections[0].keys[0].doc, vec!["note"]);
    }

    #[test]
    fn prose_with_equals_is_not_a_setting() {
        let doc = parse_annotated("[a]\n# e.g. set level = debug for more\nx = 1\n").unwrap();
        assert_eq!(doc.sections[0].keys.len(), 1);
        assert_eq!(
            doc.sections[0].keys[0].doc,
            vec!["e.g. set level = debug for more"]
        );
    }

    #[test]
    fn rejects_invalid_toml_with_a_fix() {
        let err = parse_annotated("[a]\nx = \n").unwrap_err();
        assert!(matches!(err, ConfigDocError::InvalidToml { .. }));
        assert!(err.to_string().contains("configs/kiln.toml"));
    }

    #[test]
    fn rejects_a_config_without_settings() {
        assert_eq!(
            parse_annotated("# only words\n\n[empty]\n").unwrap_err(),
            ConfigDocError::NoSettings
        );
    }

    #[test]
    fn renders_a_man_page() {
        let doc = parse_annotated(SAMPLE).unwrap();
        let page = render_man(&doc, "0.1.0");
        assert!(page.starts_with(".TH KILN.TOML 5 \"\" \"kiln 0.1.0\" \"File Formats\"\n"));
        assert!(page.contains(".SS \"[daemon]\"\n"));
        assert!(page.contains(".TP\n\\fBlog_level\\fR = \\fI\"info\"\\fR\n"));
        assert!(page.contains("The value shown is the built\\-in default."));
        assert!(page.contains(".BR kilnd (8),"));
        // Every roff request line is one we emit; no stray leading dots.
        for l in page.lines().filter(|l| l.starts_with('.')) {
            let req = l.split_whitespace().next().unwrap();
            assert!(
                [".TH", ".SH", ".SS", ".TP", ".PP", ".IP", ".B", ".BR", ".br"].contains(&req),
                "unexpected request {l}"
            );
        }
    }
}
