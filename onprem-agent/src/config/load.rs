//! Loading `agent.toml`: the file, then `SLUICE__SECTION__KEY` environment overrides (the
//! `config` crate), the rule that secrets never sit in the file, and errors that name each
//! full key and, when the environment set it, the variable.
//!
//! Each section is deserialized on its own, so one bad value does not hide the problems of
//! the others; the sections that did parse are still checked (see `check`).

use std::path::Path;

use super::check::Parsed;
use super::{
    AgentConfig, BatchConfig, ConfigError, DatabaseConfig, LogConfig, PhotosConfig, QueueConfig,
    ServerConfig, ShutdownConfig, StatusConfig, TargetConfig, ThrottleConfig, WriteConfig,
};

/// Prefix of environment overrides: `SLUICE__THROTTLE__ROWS_PER_SECOND=800`.
pub const ENV_PREFIX: &str = "SLUICE";
/// Separator between prefix, section and key in environment overrides.
pub const ENV_SEPARATOR: &str = "__";

const SECTIONS: &[&str] = &[
    "queue", "database", "throttle", "batch", "server", "log", "shutdown", "write", "status",
    "target", "photos",
];

impl AgentConfig {
    /// Loads `path` with the process environment as overrides, then validates.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let vars: Vec<(String, String)> = std::env::vars().collect();
        Self::load_with_env(path, vars)
    }

    /// Like [`AgentConfig::load`], with the environment given explicitly (tests).
    pub fn load_with_env(
        path: &Path,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::one(format!("cannot read {}: {e}", path.display())))?;
        Self::from_toml_with_env(&text, env)
    }

    /// Parses TOML text, applies environment overrides, validates.
    pub fn from_toml_with_env(
        text: &str,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let mut problems = secrets_in_file(text)?;

        let mut env_map: config::Map<String, String> = env
            .into_iter()
            .filter(|(k, _)| k.starts_with(&format!("{ENV_PREFIX}{ENV_SEPARATOR}")))
            .collect();
        let password = take_password(&mut env_map);
        let origins = Origins::from_env(env_map.keys());
        let layered = config::Config::builder()
            .add_source(config::File::from_str(text, config::FileFormat::Toml))
            .add_source(
                config::Environment::with_prefix(ENV_PREFIX)
                    .prefix_separator(ENV_SEPARATOR)
                    .separator(ENV_SEPARATOR)
                    .try_parsing(true)
                    .source(Some(env_map)),
            )
            .build()
            .map_err(|e| ConfigError::one(format!("cannot load configuration: {e}")))?;

        let root = layered
            .clone()
            .try_deserialize::<config::Map<String, config::Value>>()
            .map_err(|e| ConfigError::one(format!("cannot load configuration: {e}")))?;
        let mut unknown: Vec<&String> = root
            .keys()
            .filter(|k| !SECTIONS.contains(&k.as_str()))
            .collect();
        unknown.sort();
        for k in unknown {
            problems.push(format!(
                "unknown section [{k}] (known: {})",
                SECTIONS.join(", ")
            ));
        }

        let mut reader = SectionReader {
            cfg: &layered,
            origins: &origins,
            problems: &mut problems,
        };
        let queue = reader.required::<QueueConfig>("queue");
        let database = reader
            .required::<DatabaseConfig>("database")
            .map(|d| DatabaseConfig {
                password: password.or(d.password),
                ..d
            });
        let throttle = reader.optional::<ThrottleConfig>("throttle");
        let batch = reader.optional::<BatchConfig>("batch");
        let server = reader.optional::<ServerConfig>("server");
        let log = reader.optional::<LogConfig>("log");
        let shutdown = reader.optional::<ShutdownConfig>("shutdown");
        let write = reader.optional::<WriteConfig>("write");
        let status = reader.optional::<StatusConfig>("status");
        let target = reader.optional::<TargetConfig>("target");
        // Optional without defaults: absent means no photos are carried (a problem is listed
        // when it does not parse, so the result below is an error then).
        let photos = reader.get::<PhotosConfig>("photos").ok().flatten();

        // Every section that parsed is checked, so the operator sees everything at once.
        let parsed = Parsed {
            queue: queue.as_ref(),
            database: database.as_ref(),
            throttle: throttle.as_ref(),
            batch: batch.as_ref(),
            server: server.as_ref(),
            log: log.as_ref(),
            shutdown: shutdown.as_ref(),
            status: status.as_ref(),
        };
        problems.extend(parsed.check());
        if let Some(t) = &target {
            t.check(&mut problems);
        }
        super::photos::check(
            photos.as_ref(),
            throttle.as_ref(),
            target.as_ref(),
            &mut problems,
        );

        match (
            (
                queue, database, throttle, batch, server, log, shutdown, write, status,
            ),
            target,
        ) {
            (
                (
                    Some(queue),
                    Some(database),
                    Some(throttle),
                    Some(batch),
                    Some(server),
                    Some(log),
                    Some(shutdown),
                    Some(write),
                    Some(status),
                ),
                Some(target),
            ) if problems.is_empty() => Ok(AgentConfig {
                queue,
                database,
                throttle,
                batch,
                server,
                log,
                shutdown,
                write,
                status,
                target,
                photos,
            }),
            // A section that did not parse has its problem listed already.
            _ => Err(ConfigError { problems }),
        }
    }
}

/// Secrets never sit in the file: checked on the file alone, before the overrides, which may
/// carry the password (`SLUICE__DATABASE__PASSWORD`).
fn secrets_in_file(text: &str) -> Result<Vec<String>, ConfigError> {
    let file_only = config::Config::builder()
        .add_source(config::File::from_str(text, config::FileFormat::Toml))
        .build()
        .map_err(|e| ConfigError::one(format!("not valid TOML: {e}")))?;
    let mut problems = Vec::new();
    if file_only.get_string("database.password").is_ok() {
        problems.push(
            "database.password: secrets must not be in the file; use database.password_file \
             or the SLUICE__DATABASE__PASSWORD environment variable"
                .to_owned(),
        );
    }
    Ok(problems)
}

/// The password variable, taken out of the overrides before they are parsed: typed parsing
/// would turn `007` into the number 7 (a wrong password) and a type error would print the
/// value. It is set on `[database]` as the exact string given.
fn take_password(env: &mut config::Map<String, String>) -> Option<String> {
    let name = format!("{ENV_PREFIX}{ENV_SEPARATOR}DATABASE{ENV_SEPARATOR}PASSWORD");
    let key = env.keys().find(|k| k.eq_ignore_ascii_case(&name))?.clone();
    env.remove(&key)
}

/// Which keys the environment set, to say so next to a bad value.
struct Origins(Vec<(String, String)>);

impl Origins {
    /// `SLUICE__BATCH__MAX_ROWS` → (`batch.max_rows`, the variable's name).
    fn from_env<'a>(vars: impl Iterator<Item = &'a String>) -> Self {
        let prefix = format!("{ENV_PREFIX}{ENV_SEPARATOR}");
        Self(
            vars.filter_map(|v| {
                let path = v
                    .strip_prefix(&prefix)?
                    .to_ascii_lowercase()
                    .replace(ENV_SEPARATOR, ".");
                Some((path, v.clone()))
            })
            .collect(),
        )
    }

    fn note(&self, path: &str) -> String {
        match self.0.iter().find(|(p, _)| p == path) {
            Some((_, var)) => format!(" (set by the environment variable {var})"),
            None => String::new(),
        }
    }
}

/// Deserializes sections one by one, each error naming its full key (`queue.pollers`).
struct SectionReader<'a> {
    cfg: &'a config::Config,
    origins: &'a Origins,
    problems: &'a mut Vec<String>,
}

impl SectionReader<'_> {
    /// `Ok(None)`: the section is absent. `Err(())`: its problem is listed.
    fn get<T: serde::de::DeserializeOwned>(&mut self, key: &str) -> Result<Option<T>, ()> {
        // Through serde_json::Value so that serde_path_to_error can name the field: the
        // `config` crate's own errors only name the section.
        let value = match self.cfg.get::<serde_json::Value>(key) {
            Ok(v) => v,
            Err(config::ConfigError::NotFound(_)) => return Ok(None),
            Err(e) => {
                self.problems.push(format!("[{key}]: {e}"));
                return Err(());
            }
        };
        if !value.is_object() {
            self.problems.push(format!(
                "{key}: must be a table ([{key}]), not a single value"
            ));
            return Err(());
        }
        serde_path_to_error::deserialize::<_, T>(value)
            .map(Some)
            .map_err(|e| {
                let field = e.path().to_string();
                let path = if field == "." {
                    key.to_owned()
                } else {
                    format!("{key}.{field}")
                };
                let note = self.origins.note(&path);
                self.problems.push(format!("{path}: {}{note}", e.inner()));
            })
    }

    /// A section without defaults: absent is a problem.
    fn required<T: serde::de::DeserializeOwned>(&mut self, key: &str) -> Option<T> {
        match self.get(key) {
            Ok(Some(v)) => Some(v),
            Ok(None) => {
                self.problems.push(format!("missing section [{key}]"));
                None
            }
            Err(()) => None,
        }
    }

    /// A section with defaults: absent is its `Default`.
    fn optional<T: serde::de::DeserializeOwned + Default>(&mut self, key: &str) -> Option<T> {
        match self.get(key) {
            Ok(v) => Some(v.unwrap_or_default()),
            Err(()) => None,
        }
    }
}
