//! The registry login `docker login` keeps, for `--with-registry-auth`:
//! `auths.<registry>.auth` (base64 `user:password`) in
//! `$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`.

use std::path::PathBuf;

use anyhow::Context as _;
use base64::Engine as _;

use crate::{api::tasks::RegistryAuth, image::ImageSource};

/// Docker Hub's key in config.json.
const DOCKER_HUB: &str = "https://index.docker.io/v1/";

/// The login for `image`'s registry; `None` when there is none.
pub fn for_image(image: &str) -> anyhow::Result<Option<RegistryAuth>> {
    let ImageSource::Registry(reference) = ImageSource::parse(image)? else {
        return Ok(None);
    };
    let path = config_path()?;
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(e)
                .with_context(|| format!("--with-registry-auth: reading {}", path.display()));
        }
    };
    let config: serde_json::Value = serde_json::from_str(&text)
        .with_context(|| format!("--with-registry-auth: {} is not JSON", path.display()))?;
    let registry = match reference.registry() {
        "docker.io" => DOCKER_HUB,
        registry => registry,
    };
    let entry = &config["auths"][registry];
    let Some(encoded) = entry["auth"].as_str() else {
        if config.get("credsStore").is_some() || config["credHelpers"].get(registry).is_some() {
            anyhow::bail!(
                "--with-registry-auth: {} keeps the login for {registry} in a credential helper, which swarm does not run; log in with `docker login` after removing credsStore",
                path.display()
            );
        }
        return Ok(None);
    };
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .with_context(|| {
            format!(
                "--with-registry-auth: the login for {registry} in {} is not base64 of user:password",
                path.display()
            )
        })?;
    let (username, password) = decoded.split_once(':').with_context(|| {
        format!(
            "--with-registry-auth: the login for {registry} in {} is not user:password",
            path.display()
        )
    })?;
    Ok(Some(RegistryAuth {
        username: username.to_owned(),
        password: password.to_owned(),
    }))
}

fn config_path() -> anyhow::Result<PathBuf> {
    if let Some(dir) = std::env::var_os("DOCKER_CONFIG") {
        return Ok(PathBuf::from(dir).join("config.json"));
    }
    let home = std::env::var_os("HOME").context(
        "--with-registry-auth: neither DOCKER_CONFIG nor HOME is set, so there is no docker config to read",
    )?;
    Ok(PathBuf::from(home).join(".docker").join("config.json"))
}
