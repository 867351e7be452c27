//! `${VAR}` in a compose file, as docker/cli's stack loader reads it:
//! `$VAR`, `${VAR}`, `${VAR:-default}` (unset or empty), `${VAR-default}`
//! (unset), `${VAR:?error}` and `${VAR?error}` (required), `$$` for a
//! literal `$`. Every string in the file is interpolated, keys are not.

use std::collections::BTreeMap;

/// Why a string cannot be interpolated.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum InterpolationError {
    #[error(
        "invalid interpolation format for {path}: {text:?}; you may need to escape any $ with another $"
    )]
    Format { path: String, text: String },
    #[error("required variable {name} is missing a value: {message}")]
    Required { name: String, message: String },
}

/// Where variables come from: the process's environment over a `.env` file.
#[derive(Clone, Debug, Default)]
pub struct Variables(pub BTreeMap<String, String>);

impl Variables {
    fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }
}

/// `text` with its variables replaced; `path` names it in errors.
pub fn interpolate(text: &str, path: &str, vars: &Variables) -> Result<String, InterpolationError> {
    let bad = || InterpolationError::Format {
        path: path.to_owned(),
        text: text.to_owned(),
    };
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        rest = &rest[at + 1..];
        if let Some(after) = rest.strip_prefix('$') {
            out.push('$');
            rest = after;
        } else if let Some(braced) = rest.strip_prefix('{') {
            let end = closing_brace(braced).ok_or_else(bad)?;
            out.push_str(&substitute(&braced[..end], vars, path, text)?);
            rest = &braced[end + 1..];
        } else {
            let len = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            if len == 0 || rest.starts_with(|c: char| c.is_ascii_digit()) {
                return Err(bad());
            }
            out.push_str(vars.get(&rest[..len]).unwrap_or_default());
            rest = &rest[len..];
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// Where the `}` closing a `${` is, nested `${...}` in defaults counted.
fn closing_brace(text: &str) -> Option<usize> {
    let mut depth = 0usize;
    let bytes = text.as_bytes();
    for (i, &b) in bytes.iter().enumerate() {
        match b {
            b'{' if i > 0 && bytes[i - 1] == b'$' => depth += 1,
            b'}' if depth == 0 => return Some(i),
            b'}' => depth -= 1,
            _ => {}
        }
    }
    None
}

/// One `${...}`'s value.
fn substitute(
    inner: &str,
    vars: &Variables,
    path: &str,
    text: &str,
) -> Result<String, InterpolationError> {
    let name_len = inner
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(inner.len());
    let (name, modifier) = inner.split_at(name_len);
    if name.is_empty() || name.starts_with(|c: char| c.is_ascii_digit()) {
        return Err(InterpolationError::Format {
            path: path.to_owned(),
            text: text.to_owned(),
        });
    }
    let value = vars.get(name);
    let nested = |default: &str| interpolate(default, path, vars);
    match modifier {
        "" => Ok(value.unwrap_or_default().to_owned()),
        m if m.starts_with(":-") => match value {
            Some(v) if !v.is_empty() => Ok(v.to_owned()),
            _ => nested(&m[2..]),
        },
        m if m.starts_with('-') => match value {
            Some(v) => Ok(v.to_owned()),
            None => nested(&m[1..]),
        },
        m if m.starts_with(":?") => match value {
            Some(v) if !v.is_empty() => Ok(v.to_owned()),
            _ => Err(InterpolationError::Required {
                name: name.to_owned(),
                message: m[2..].to_owned(),
            }),
        },
        m if m.starts_with('?') => match value {
            Some(v) => Ok(v.to_owned()),
            None => Err(InterpolationError::Required {
                name: name.to_owned(),
                message: m[1..].to_owned(),
            }),
        },
        _ => Err(InterpolationError::Format {
            path: path.to_owned(),
            text: text.to_owned(),
        }),
    }
}

/// A `.env` file's `KEY=VALUE` lines: `#` comments and blank lines skipped,
/// `export ` allowed, values in single or double quotes unquoted.
pub fn parse_env_file(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .filter_map(|line| {
            let line = line.strip_prefix("export ").unwrap_or(line);
            let (key, value) = line.split_once('=')?;
            let value = value.trim();
            let unquoted = [('"', '"'), ('\'', '\'')]
                .iter()
                .find_map(|(open, close)| {
                    value
                        .strip_prefix(*open)
                        .and_then(|v| v.strip_suffix(*close))
                })
                .unwrap_or(value);
            Some((key.trim().to_owned(), unquoted.to_owned()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> Variables {
        Variables(
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        )
    }

    #[test]
    fn variables_defaults_and_escapes_follow_docker() {
        let v = vars(&[("TAG", "1.2"), ("EMPTY", "")]);
        let i = |text: &str| interpolate(text, "services.web.image", &v);
        assert_eq!(i("nginx:${TAG}").unwrap(), "nginx:1.2");
        assert_eq!(i("nginx:$TAG").unwrap(), "nginx:1.2");
        assert_eq!(i("${MISSING:-latest}").unwrap(), "latest");
        assert_eq!(i("${EMPTY:-fallback}").unwrap(), "fallback");
        assert_eq!(i("${EMPTY-fallback}").unwrap(), "");
        assert_eq!(i("${MISSING-${TAG}}").unwrap(), "1.2");
        assert_eq!(i("cost: $$5").unwrap(), "cost: $5");
        assert_eq!(i("${MISSING}").unwrap(), "");
    }

    #[test]
    fn required_and_malformed_variables_are_refused_in_dockers_words() {
        let v = vars(&[]);
        assert_eq!(
            interpolate("${DB?set DB first}", "p", &v)
                .unwrap_err()
                .to_string(),
            "required variable DB is missing a value: set DB first"
        );
        assert!(matches!(
            interpolate("${unclosed", "services.web.image", &v),
            Err(InterpolationError::Format { .. })
        ));
        assert!(
            interpolate("${1x}", "p", &v)
                .unwrap_err()
                .to_string()
                .contains("invalid interpolation format for p")
        );
    }

    #[test]
    fn env_files_read_as_docker_writes_them() {
        let env = parse_env_file("# comment\nTAG=1.2\nexport NAME=\"web app\"\n\nQUOTED='x=y'\n");
        assert_eq!(env["TAG"], "1.2");
        assert_eq!(env["NAME"], "web app");
        assert_eq!(env["QUOTED"], "x=y");
        assert_eq!(env.len(), 3);
    }
}
