//! The dataset folder, owned here: `train.jsonl`, `val.jsonl` (one [`Record`] per line) and
//! `meta.json` ([`DatasetMeta`]); question–answer datasets add `pairs.jsonl` (one
//! [`SourcedPair`] per line, the kept pairs with their place and split) and `passages.jsonl` (one
//! [`StoredPassage`] per line, the passages they came from). [`DatasetDir`] names its files; [`SplitReader`] indexes a
//! split by line offsets so the trainer can read any example on demand without loading the
//! split; [`DatasetDir::read_split`] streams one.

use crate::qa::{SourcedPair, StoredPassage};
use crate::{io, DatasetError, DatasetMeta, Record};
use std::io::{BufRead, BufReader, Seek, SeekFrom};
use std::path::{Path, PathBuf};

/// `meta.json`.
pub const META_FILE: &str = "meta.json";
/// A question–answer dataset's pairs.
pub const PAIRS_FILE: &str = "pairs.jsonl";
/// A question–answer dataset's passages.
pub const PASSAGES_FILE: &str = "passages.jsonl";

/// Which split to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Split {
    Train,
    Val,
}

impl Split {
    /// The split's file name in the dataset folder.
    pub fn file_name(self) -> &'static str {
        match self {
            Split::Train => "train.jsonl",
            Split::Val => "val.jsonl",
        }
    }
}

/// A dataset folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatasetDir {
    path: PathBuf,
}

impl DatasetDir {
    /// The dataset folder at `path` (not checked; see [`DatasetDir::open`]).
    pub fn at(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    /// The dataset folder at `path`, which must hold a `meta.json`.
    pub fn open(path: impl Into<PathBuf>) -> Result<Self, DatasetError> {
        let d = Self::at(path);
        if !Self::is_dataset(&d.path) {
            return Err(DatasetError::Input {
                path: d.path.clone(),
                message: format!("is not a dataset folder (no {META_FILE})"),
            });
        }
        Ok(d)
    }

    /// Whether `path` holds a dataset (a `meta.json`).
    pub fn is_dataset(path: &Path) -> bool {
        path.join(META_FILE).is_file()
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn meta_path(&self) -> PathBuf {
        self.path.join(META_FILE)
    }

    pub fn split_path(&self, split: Split) -> PathBuf {
        self.path.join(split.file_name())
    }

    pub fn pairs_path(&self) -> PathBuf {
        self.path.join(PAIRS_FILE)
    }

    pub fn passages_path(&self) -> PathBuf {
        self.path.join(PASSAGES_FILE)
    }

    /// A question–answer dataset's pairs (empty for other datasets).
    pub fn read_pairs(&self) -> Result<Vec<SourcedPair>, DatasetError> {
        read_lines(&self.pairs_path(), "pair")
    }

    /// A question–answer dataset's passages (empty for other datasets).
    pub fn read_passages(&self) -> Result<Vec<StoredPassage>, DatasetError> {
        read_lines(&self.passages_path(), "passage")
    }

    /// The files the training data is: `meta.json`, train, val, in a fixed order (a
    /// question–answer dataset's pairs and passages are what they were made from, not part of it).
    pub fn files(&self) -> [PathBuf; 3] {
        [
            self.meta_path(),
            self.split_path(Split::Train),
            self.split_path(Split::Val),
        ]
    }

    /// Reads `meta.json`.
    pub fn read_meta(&self) -> Result<DatasetMeta, DatasetError> {
        let p = self.meta_path();
        let bytes = std::fs::read(&p).map_err(io(&p))?;
        serde_json::from_slice(&bytes).map_err(|e| DatasetError::Input {
            path: p,
            message: format!("is not a dataset's meta.json: {e}"),
        })
    }

    /// The examples of a split, read one line at a time (nothing is loaded whole; blank lines
    /// are skipped, as [`SplitReader`] skips them).
    pub fn read_split(
        &self,
        split: Split,
    ) -> Result<impl Iterator<Item = Result<Record, DatasetError>>, DatasetError> {
        let p = self.split_path(split);
        let f = std::fs::File::open(&p).map_err(io(&p))?;
        Ok(BufReader::new(f)
            .lines()
            .enumerate()
            .filter(|(_, line)| line.as_ref().map_or(true, |l| !l.trim().is_empty()))
            .map(move |(i, line)| {
                let line = line.map_err(|e| DatasetError::Io {
                    path: p.clone(),
                    source: e,
                })?;
                parse_record(&p, i, &line)
            }))
    }

    /// A split indexed for random access.
    pub fn index(&self, split: Split) -> Result<SplitReader, DatasetError> {
        SplitReader::open(self.split_path(split))
    }
}

/// Every line of a JSONL file the dataset folder owns; a missing file has none.
fn read_lines<T: serde::de::DeserializeOwned>(
    path: &Path,
    what: &str,
) -> Result<Vec<T>, DatasetError> {
    let f = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io(path)(e)),
    };
    let mut out = Vec::new();
    for (i, line) in BufReader::new(f).lines().enumerate() {
        let line = line.map_err(io(path))?;
        if line.trim().is_empty() {
            continue;
        }
        out.push(
            serde_json::from_str(&line).map_err(|e| DatasetError::Input {
                path: path.to_path_buf(),
                message: format!("line {}: not a dataset {what}: {e}", i + 1),
            })?,
        );
    }
    Ok(out)
}

/// Writes `items` as JSONL at `path` (the folder is staged; see [`crate::build`]).
pub(crate) fn write_lines<T: serde::Serialize>(
    path: &Path,
    items: impl IntoIterator<Item = T>,
) -> Result<(), DatasetError> {
    use std::io::Write;
    let mut w = std::io::BufWriter::new(std::fs::File::create(path).map_err(io(path))?);
    for item in items {
        let line =
            serde_json::to_string(&item).map_err(|e| DatasetError::Invalid(e.to_string()))?;
        writeln!(w, "{line}").map_err(io(path))?;
    }
    w.into_inner().map_err(|e| DatasetError::Io {
        path: path.to_path_buf(),
        source: e.into_error(),
    })?;
    Ok(())
}

fn parse_record(path: &Path, i: usize, line: &str) -> Result<Record, DatasetError> {
    serde_json::from_str::<Record>(line).map_err(|e| DatasetError::Input {
        path: path.to_path_buf(),
        message: format!("line {}: not a dataset record: {e}", i + 1),
    })
}

/// A split indexed by the byte offset of each non-blank line; examples are read on demand.
#[derive(Debug)]
pub struct SplitReader {
    path: PathBuf,
    offsets: Vec<u64>,
    /// The line number (0-based) of each example, for error messages.
    lines: Vec<usize>,
    file: BufReader<std::fs::File>,
}

impl SplitReader {
    /// Indexes the split file at `path` (one pass over it).
    pub fn open(path: PathBuf) -> Result<Self, DatasetError> {
        let f = std::fs::File::open(&path).map_err(io(&path))?;
        let mut reader = BufReader::new(f);
        let (mut offsets, mut lines) = (Vec::new(), Vec::new());
        let mut pos = 0u64;
        let mut line = Vec::new();
        for n_line in 0.. {
            line.clear();
            let n = reader.read_until(b'\n', &mut line).map_err(io(&path))?;
            if n == 0 {
                break;
            }
            if line.iter().any(|b| !b.is_ascii_whitespace()) {
                offsets.push(pos);
                lines.push(n_line);
            }
            pos += n as u64;
        }
        Ok(Self {
            file: reader,
            offsets,
            lines,
            path,
        })
    }

    /// Examples in the split.
    pub fn len(&self) -> usize {
        self.offsets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.offsets.is_empty()
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Example `i` (0-based, in file order).
    pub fn read(&mut self, i: usize) -> Result<Record, DatasetError> {
        let Some(&at) = self.offsets.get(i) else {
            return Err(DatasetError::Input {
                path: self.path.clone(),
                message: format!("has {} examples; there is no example {}", self.len(), i + 1),
            });
        };
        self.file
            .seek(SeekFrom::Start(at))
            .map_err(io(&self.path))?;
        let mut line = String::new();
        self.file.read_line(&mut line).map_err(io(&self.path))?;
        parse_record(&self.path, self.lines[i], &line)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_access_matches_streaming_and_skips_blank_lines() {
        let d = tempfile::tempdir().unwrap();
        let rec = |n: u32| Record {
            ids: vec![n, n + 1],
            mask: vec![0, 1],
            text: format!("t{n}"),
            spans: vec![(0, 1)],
            source: None,
        };
        let mut text = String::new();
        for n in 0..5 {
            text.push_str(&serde_json::to_string(&rec(n)).unwrap());
            text.push_str(if n == 2 { "\n\n  \n" } else { "\n" });
        }
        std::fs::write(d.path().join("train.jsonl"), &text).unwrap();
        let dir = DatasetDir::at(d.path());
        let streamed: Vec<Record> = dir
            .read_split(Split::Train)
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        let mut idx = dir.index(Split::Train).unwrap();
        assert_eq!(idx.len(), 5);
        assert_eq!(idx.read(4).unwrap(), rec(4));
        assert_eq!(idx.read(0).unwrap(), rec(0));
        assert_eq!(streamed, (0..5).map(rec).collect::<Vec<_>>());
        let e = idx.read(5).unwrap_err().to_string();
        assert!(e.contains("there is no example 6"), "{e}");
        assert!(DatasetDir::open(d.path()).is_err(), "no meta.json");
    }

    #[test]
    fn a_broken_line_is_named_by_its_line_number() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("val.jsonl"), "\n{\"ids\": oops}\n").unwrap();
        let mut idx = DatasetDir::at(d.path()).index(Split::Val).unwrap();
        let e = idx.read(0).unwrap_err().to_string();
        assert!(e.contains("val.jsonl") && e.contains("line 2"), "{e}");
    }
}
