//! Where the redelivery sweeper remembers the start of its last complete
//! sweep (see the parent module for why not on a secret).

use std::path::PathBuf;
use std::sync::Mutex;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

/// Where the end of the last complete sweep is remembered.
#[async_trait]
pub trait SweepMark: Send + Sync + 'static {
    async fn load(&self) -> Option<DateTime<Utc>>;
    async fn save(&self, at: DateTime<Utc>) -> Result<(), String>;
}

/// The mark in this instance's memory (gcp: no disk survives an instance).
#[derive(Debug, Default)]
pub struct MemoryMark(Mutex<Option<DateTime<Utc>>>);

#[async_trait]
impl SweepMark for MemoryMark {
    async fn load(&self) -> Option<DateTime<Utc>> {
        *self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
    async fn save(&self, at: DateTime<Utc>) -> Result<(), String> {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = Some(at);
        Ok(())
    }
}

/// The mark as one RFC 3339 line in a file (the local backend's home).
#[derive(Debug, Clone)]
pub struct FileMark {
    path: PathBuf,
}

impl FileMark {
    pub fn new(path: PathBuf) -> Self {
        Self { path }
    }
}

#[async_trait]
impl SweepMark for FileMark {
    async fn load(&self) -> Option<DateTime<Utc>> {
        let text = tokio::fs::read_to_string(&self.path).await.ok()?;
        DateTime::parse_from_rfc3339(text.trim())
            .ok()
            .map(|t| t.with_timezone(&Utc))
    }

    async fn save(&self, at: DateTime<Utc>) -> Result<(), String> {
        let shown = self.path.display().to_string();
        if let Some(dir) = self.path.parent() {
            tokio::fs::create_dir_all(dir)
                .await
                .map_err(|e| format!("creating {}: {e}", dir.display()))?;
        }
        // Write then rename: a crash never leaves half a timestamp.
        let tmp = self.path.with_extension("tmp");
        tokio::fs::write(&tmp, format!("{}\n", at.to_rfc3339()))
            .await
            .map_err(|e| format!("writing {shown}: {e}"))?;
        tokio::fs::rename(&tmp, &self.path)
            .await
            .map_err(|e| format!("writing {shown}: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn file_mark_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let mark = FileMark::new(dir.path().join("sub").join("mark"));
        assert_eq!(mark.load().await, None);
        let t = DateTime::parse_from_rfc3339("2026-03-01T10:00:00Z")
            .unwrap()
            .to_utc();
        mark.save(t).await.unwrap();
        assert_eq!(mark.load().await, Some(t));
        std::fs::write(dir.path().join("sub").join("mark"), "garbage").unwrap();
        assert_eq!(
            mark.load().await,
            None,
            "an unreadable mark means a full scan"
        );
    }
}
