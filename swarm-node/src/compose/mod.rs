//! Compose files as `docker stack deploy -c` reads them: YAML with anchors
//! and merge keys, `x-` extension fields, `${VAR}` from the environment
//! over a `.env` file beside the first file, several files merged in
//! order; then typed (`model`). An invalid file is refused naming the
//! file, the line and the key, before anything is made of it.

pub mod interpolate;
pub mod model;

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use serde_yaml_ng::{Mapping, Value};

use self::interpolate::{InterpolationError, Variables, interpolate, parse_env_file};
pub use self::model::ComposeFile;

#[derive(Debug, thiserror::Error)]
pub enum ComposeError {
    #[error("{file}: {source}")]
    Read {
        file: String,
        source: std::io::Error,
    },
    #[error("{file}: {message}")]
    Syntax { file: String, message: String },
    #[error("{file}: {source}")]
    Interpolation {
        file: String,
        source: InterpolationError,
    },
    #[error("{file}: {where_}{key}: {message}")]
    Invalid {
        file: String,
        /// `line N: `, when the key is found in the file.
        where_: String,
        key: String,
        message: String,
    },
}

/// The files merged, and what a deploy needs to know besides.
#[derive(Debug)]
pub struct Loaded {
    pub compose: ComposeFile,
    /// Relative paths (secret files, bind sources) start here: the first
    /// file's directory.
    pub base_dir: PathBuf,
    /// Service keys a stack cannot use, sorted, for Docker's
    /// `Ignoring unsupported options: ...`.
    pub unsupported: Vec<String>,
}

/// Reads, interpolates and merges `files` (later ones override earlier
/// ones) with `environment` over the `.env` beside the first file.
pub fn load(
    files: &[PathBuf],
    environment: &BTreeMap<String, String>,
) -> Result<Loaded, ComposeError> {
    let base_dir = files
        .first()
        .and_then(|f| f.parent())
        .map(Path::to_owned)
        .unwrap_or_default();
    let mut vars = match std::fs::read_to_string(base_dir.join(".env")) {
        Ok(text) => parse_env_file(&text),
        Err(_) => BTreeMap::new(),
    };
    vars.extend(environment.iter().map(|(k, v)| (k.clone(), v.clone())));
    let vars = Variables(vars);
    let mut merged = Value::Mapping(Mapping::new());
    let mut texts = Vec::new();
    for file in files {
        let name = file.display().to_string();
        let text = std::fs::read_to_string(file).map_err(|source| ComposeError::Read {
            file: name.clone(),
            source,
        })?;
        let mut value = parse(&name, &text)?;
        interpolate_value(&mut value, "", &vars).map_err(|source| ComposeError::Interpolation {
            file: name.clone(),
            source,
        })?;
        merge(&mut merged, value);
        texts.push((name, text));
    }
    drop_extensions(&mut merged);
    let compose: ComposeFile = serde_path_to_error::deserialize(merged).map_err(|err| {
        let key = err.path().to_string();
        // The last file that holds the key is the one that set it.
        let (file, line) = texts
            .iter()
            .rev()
            .find_map(|(name, text)| line_of(text, &key).map(|line| (name.clone(), Some(line))))
            .unwrap_or_else(|| (texts.last().map(|t| t.0.clone()).unwrap_or_default(), None));
        let message = err.into_inner().to_string();
        // Docker's words for a key the schema does not have.
        let (key, message) = match message
            .strip_prefix("unknown field `")
            .and_then(|rest| rest.split_once('`'))
        {
            Some((field, _)) => (
                key.rsplit_once('.')
                    .map_or(String::new(), |(parent, _)| parent.to_owned()),
                format!("Additional property {field} is not allowed"),
            ),
            None => (key, message),
        };
        ComposeError::Invalid {
            file,
            where_: line.map(|l| format!("line {l}: ")).unwrap_or_default(),
            key,
            message,
        }
    })?;
    let mut unsupported: Vec<String> = compose
        .services
        .values()
        .flat_map(|s| s.unsupported.keys().cloned())
        .collect();
    unsupported.sort();
    unsupported.dedup();
    Ok(Loaded {
        compose,
        base_dir,
        unsupported,
    })
}

/// One file's YAML, merge keys (`<<: *anchor`) applied.
fn parse(file: &str, text: &str) -> Result<Value, ComposeError> {
    let mut value: Value = serde_yaml_ng::from_str(text).map_err(|err| ComposeError::Syntax {
        file: file.to_owned(),
        message: err.to_string(),
    })?;
    if value.is_null() {
        value = Value::Mapping(Mapping::new());
    }
    value.apply_merge().map_err(|err| ComposeError::Syntax {
        file: file.to_owned(),
        message: err.to_string(),
    })?;
    if !value.is_mapping() {
        return Err(ComposeError::Syntax {
            file: file.to_owned(),
            message: "the top level must be a mapping (services:, networks:, ...)".into(),
        });
    }
    Ok(value)
}

/// Every string in `value` interpolated; `path` names where, for errors.
fn interpolate_value(
    value: &mut Value,
    path: &str,
    vars: &Variables,
) -> Result<(), InterpolationError> {
    match value {
        Value::String(text) => *text = interpolate(text, path, vars)?,
        Value::Sequence(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                interpolate_value(item, &format!("{path}[{i}]"), vars)?;
            }
        }
        Value::Mapping(map) => {
            for (key, item) in map.iter_mut() {
                let key = key.as_str().unwrap_or("?");
                let path = if path.is_empty() {
                    key.to_owned()
                } else {
                    format!("{path}.{key}")
                };
                interpolate_value(item, &path, vars)?;
            }
        }
        Value::Tagged(tagged) => interpolate_value(&mut tagged.value, path, vars)?,
        _ => {}
    }
    Ok(())
}

/// `over` on top of `base`: mappings merged key by key, anything else
/// replaced, as docker/cli merges `-c` files.
fn merge(base: &mut Value, over: Value) {
    match (base, over) {
        (Value::Mapping(base), Value::Mapping(over)) => {
            for (key, value) in over {
                match base.get_mut(&key) {
                    Some(existing) => merge(existing, value),
                    None => {
                        base.insert(key, value);
                    }
                }
            }
        }
        (base, over) => *base = over,
    }
}

/// `x-` keys at the top and in services, networks, volumes, secrets and
/// configs: for anchors, never read.
fn drop_extensions(value: &mut Value) {
    let Value::Mapping(top) = value else { return };
    let is_extension = |key: &Value| key.as_str().is_some_and(|k| k.starts_with("x-"));
    top.retain(|key, _| !is_extension(key));
    for section in ["services", "networks", "volumes", "secrets", "configs"] {
        if let Some(Value::Mapping(items)) = top.get_mut(section) {
            items.retain(|key, _| !is_extension(key));
            for (_, item) in items.iter_mut() {
                if let Value::Mapping(fields) = item {
                    fields.retain(|key, _| !is_extension(key));
                }
            }
        }
    }
}

/// The line (from 1) where `path` (`services.web.deploy.replicas`, `[0]`
/// indexes ignored) is written in `text`, by indentation; the nearest
/// enclosing key's line when the key itself is not there.
fn line_of(text: &str, path: &str) -> Option<usize> {
    let wanted: Vec<&str> = path
        .split('.')
        .map(|part| part.split('[').next().unwrap_or(part))
        .filter(|part| !part.is_empty())
        .collect();
    let mut stack: Vec<(usize, String)> = Vec::new();
    let mut best: Option<(usize, usize)> = None;
    for (n, line) in text.lines().enumerate() {
        let trimmed = line.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let mut indent = line.len() - trimmed.len();
        let mut body = trimmed;
        while let Some(rest) = body.strip_prefix("- ") {
            indent += 2;
            body = rest.trim_start();
        }
        let Some((key, _)) = body.split_once(':') else {
            continue;
        };
        let key = key.trim().trim_matches(|c| c == '"' || c == '\'');
        if key.contains(' ') {
            continue;
        }
        while stack.last().is_some_and(|(i, _)| *i >= indent) {
            stack.pop();
        }
        stack.push((indent, key.to_owned()));
        let keys: Vec<&str> = stack.iter().map(|(_, k)| k.as_str()).collect();
        let matched = keys.len() <= wanted.len() && keys == wanted[..keys.len()];
        if matched && best.is_none_or(|(depth, _)| keys.len() > depth) {
            best = Some((keys.len(), n + 1));
            if keys.len() == wanted.len() {
                break;
            }
        }
    }
    best.map(|(_, line)| line)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    const APP: &str = r#"
version: "3.8"
x-defaults: &defaults
  restart_policy:
    condition: on-failure
services:
  web:
    image: "registry.example:5000/web:${TAG:-latest}"
    ports: ["8080:80"]
    build: ./web
    deploy:
      <<: *defaults
      replicas: ${REPLICAS}
  db:
    image: postgres:${PG_VERSION}
    container_name: db
    x-note: kept for anchors only
secrets:
  db-password:
    file: ./db-password.txt
"#;

    #[test]
    fn a_stack_file_loads_with_env_anchors_and_extensions() {
        let dir = tempfile::tempdir().unwrap();
        let file = write(dir.path(), "compose.yml", APP);
        write(dir.path(), ".env", "PG_VERSION=16\nREPLICAS=2\n");
        let env = BTreeMap::from([("REPLICAS".to_owned(), "3".to_owned())]);
        let loaded = load(&[file], &env).unwrap();
        let web = &loaded.compose.services["web"];
        assert_eq!(
            web.image.as_deref(),
            Some("registry.example:5000/web:latest")
        );
        let deploy = web.deploy.as_ref().unwrap();
        // The environment wins over .env; the anchor's keys are merged in.
        assert_eq!(deploy.replicas, Some(3));
        assert_eq!(
            deploy.restart_policy.as_ref().unwrap().condition.as_deref(),
            Some("on-failure")
        );
        assert_eq!(
            loaded.compose.services["db"].image.as_deref(),
            Some("postgres:16")
        );
        assert_eq!(loaded.unsupported, ["build", "container_name"]);
        assert_eq!(loaded.base_dir, dir.path());
    }

    #[test]
    fn later_files_override_earlier_ones() {
        let dir = tempfile::tempdir().unwrap();
        let base = write(
            dir.path(),
            "a.yml",
            "services:\n  web:\n    image: web:1\n    deploy:\n      replicas: 2\n",
        );
        let over = write(dir.path(), "b.yml", "services:\n  web:\n    image: web:2\n");
        let loaded = load(&[base, over], &BTreeMap::new()).unwrap();
        let web = &loaded.compose.services["web"];
        assert_eq!(web.image.as_deref(), Some("web:2"));
        assert_eq!(web.deploy.as_ref().unwrap().replicas, Some(2));
    }

    #[test]
    fn a_broken_file_is_refused_naming_the_file_line_and_key() {
        let dir = tempfile::tempdir().unwrap();
        let bad = write(
            dir.path(),
            "bad.yml",
            "services:\n  web:\n    image: web:1\n    deploy:\n      replicas: many\n",
        );
        let err = load(&[bad], &BTreeMap::new()).unwrap_err().to_string();
        assert!(
            err.contains("bad.yml: line 5: services.web.deploy.replicas"),
            "{err}"
        );
        let unknown = write(
            dir.path(),
            "unknown.yml",
            "services:\n  web:\n    image: web:1\n    deploy:\n      replicaz: 2\n",
        );
        let err = load(&[unknown], &BTreeMap::new()).unwrap_err().to_string();
        assert!(
            err.ends_with("unknown.yml: line 5: services.web.deploy: Additional property replicaz is not allowed"),
            "{err}"
        );
        let syntax = write(dir.path(), "syntax.yml", "services:\n  web:\n   image: [\n");
        let err = load(&[syntax], &BTreeMap::new()).unwrap_err().to_string();
        assert!(
            err.starts_with(&format!("{}: ", dir.path().join("syntax.yml").display())),
            "{err}"
        );
        assert!(err.contains("line"), "{err}");
        let required = write(
            dir.path(),
            "req.yml",
            "services:\n  web:\n    image: web:${TAG?give a tag}\n",
        );
        let err = load(&[required], &BTreeMap::new()).unwrap_err().to_string();
        assert!(
            err.ends_with("required variable TAG is missing a value: give a tag"),
            "{err}"
        );
    }

    #[test]
    fn shell_words_split_commands_as_a_shell_would() {
        assert_eq!(
            model::shell_words(r#"sh -c "echo 'hi there'" x\ y"#),
            ["sh", "-c", "echo 'hi there'", "x y"]
        );
    }
}
