//! Where the demo keeps its files (`.sluice-dev/demo/`) and finds the binaries it runs.

use std::path::PathBuf;

use anyhow::Context as _;

/// Where the demo keeps its files and finds the binaries it runs.
#[derive(Debug)]
pub(crate) struct Paths {
    pub(crate) dir: PathBuf,
    pub(crate) ingest_bin: PathBuf,
}

impl Paths {
    /// Finds the binaries (built next to the demo's own) and creates the directory.
    pub(crate) fn locate() -> anyhow::Result<Self> {
        // The agent's is found again when it starts; looking now fails before anything runs.
        sluice_e2e::binary("sluice-agent")?;
        let ingest_bin = sluice_e2e::binary("sluice-ingest")?;
        let dir = sluice_e2e::repo_root().join(".sluice-dev").join("demo");
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(Self { dir, ingest_bin })
    }

    pub(crate) fn agent_toml(&self) -> PathBuf {
        self.dir.join("agent.toml")
    }

    pub(crate) fn log(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.log"))
    }

    pub(crate) fn pid_file(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.pid"))
    }
}
