//! MS MARCO-style training triples, one `(query, positive passage, negative passage)` per line:
//! either as text (`triples.train.small.tsv`: `query<TAB>positive<TAB>negative`) or as ids
//! (`qidpidtriples.train.full.tsv`: `qid<TAB>pid<TAB>nid`) resolved against queries and a corpus.

use std::fs::File;
use std::io::{BufRead, BufReader, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::corpus::Corpus;
use crate::error::ReadError;
use crate::queries::Queries;

/// One training example for a cross-encoder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Triple {
    /// Query text.
    pub query: String,
    /// Text of a relevant passage.
    pub positive: String,
    /// Text of a non-relevant passage.
    pub negative: String,
}

/// Reads text triples (`query<TAB>positive<TAB>negative`).
pub fn read_text_triples(path: &Path) -> Result<Vec<Triple>, ReadError> {
    let mut all = Vec::new();
    stream(path, None, None, |_, triple| all.push(triple))?;
    Ok(all)
}

/// Reads id triples (`qid<TAB>positive docid<TAB>negative docid`), looking the texts up; an id
/// missing from `queries` or `corpus` is an error naming the line.
pub fn read_id_triples(
    path: &Path,
    queries: &Queries,
    corpus: &Corpus,
) -> Result<Vec<Triple>, ReadError> {
    let mut all = Vec::new();
    stream(path, Some((queries, corpus)), None, |_, triple| {
        all.push(triple)
    })?;
    Ok(all)
}

/// A triples file read line by line, never held whole in memory: MS MARCO's run to tens of
/// millions of lines. Text triples are their own texts; id triples are looked up in the queries
/// and corpus given.
pub struct TriplesFile {
    path: PathBuf,
    lookup: Option<Arc<(Queries, Corpus)>>,
}

impl TriplesFile {
    /// Text triples (`query<TAB>positive<TAB>negative`).
    pub fn text(path: &Path) -> Self {
        Self {
            path: path.to_path_buf(),
            lookup: None,
        }
    }

    /// Id triples (`qid<TAB>pid<TAB>nid`) resolved against `lookup`'s queries and corpus.
    pub fn ids(path: &Path, lookup: Arc<(Queries, Corpus)>) -> Self {
        Self {
            path: path.to_path_buf(),
            lookup: Some(lookup),
        }
    }

    fn lookup(&self) -> Option<(&Queries, &Corpus)> {
        self.lookup.as_deref().map(|(q, c)| (q, c))
    }

    /// Calls `f` with the byte offset and the triple of each non-blank line in file order, the
    /// first `cap` of them (all when `None`); returns how many. A malformed line (not UTF-8, not
    /// three fields, an unknown id) stops it with an error naming the line.
    pub fn for_each(
        &self,
        cap: Option<usize>,
        f: impl FnMut(u64, Triple),
    ) -> Result<usize, ReadError> {
        stream(&self.path, self.lookup(), cap, f)
    }

    /// The triple of the line at `offset` (one [`TriplesFile::for_each`] reported), read through
    /// `reader`, a reader of this file.
    pub fn triple_at(
        &self,
        reader: &mut BufReader<File>,
        offset: u64,
    ) -> Result<Triple, ReadError> {
        let changed = |what: &str| ReadError::Io {
            path: self.path.clone(),
            source: std::io::Error::other(format!(
                "{what} at byte {offset}: the file changed after it was indexed"
            )),
        };
        reader
            .seek(SeekFrom::Start(offset))
            .map_err(|e| ReadError::io(&self.path, e))?;
        let mut raw = Vec::new();
        reader
            .read_until(b'\n', &mut raw)
            .map_err(|e| ReadError::io(&self.path, e))?;
        let line = std::str::from_utf8(trim_line_end(&raw)).map_err(|_| changed("not UTF-8"))?;
        // Line numbers are not tracked past indexing; the offset names the place.
        parse_triple(&self.path, 0, line, self.lookup()).map_err(|_| changed("not a triple"))
    }

    /// Opens a reader for [`TriplesFile::triple_at`].
    pub fn reader(&self) -> Result<BufReader<File>, ReadError> {
        File::open(&self.path)
            .map(BufReader::new)
            .map_err(|e| ReadError::io(&self.path, e))
    }
}

/// The first `cap` triples (all when `None`) of `path` with their byte offsets, in file order.
fn stream(
    path: &Path,
    lookup: Option<(&Queries, &Corpus)>,
    cap: Option<usize>,
    mut f: impl FnMut(u64, Triple),
) -> Result<usize, ReadError> {
    let file = File::open(path).map_err(|e| ReadError::io(path, e))?;
    let mut reader = BufReader::new(file);
    let (mut offset, mut line_no, mut count) = (0u64, 0usize, 0usize);
    let mut raw = Vec::new();
    while cap.is_none_or(|cap| count < cap) {
        raw.clear();
        let read = reader
            .read_until(b'\n', &mut raw)
            .map_err(|e| ReadError::io(path, e))?;
        if read == 0 {
            break;
        }
        line_no += 1;
        let line_offset = offset;
        offset += read as u64;
        let line = line_text(path, line_no, &raw)?;
        if line.trim().is_empty() {
            continue;
        }
        f(line_offset, parse_triple(path, line_no, line, lookup)?);
        count += 1;
    }
    Ok(count)
}

/// One line's triple: its fields as they are, or ids looked up in `lookup`.
fn parse_triple(
    path: &Path,
    line_no: usize,
    line: &str,
    lookup: Option<(&Queries, &Corpus)>,
) -> Result<Triple, ReadError> {
    let [a, b, c] = three_fields(path, line_no, line)?;
    let Some((queries, corpus)) = lookup else {
        return Ok(Triple {
            query: a.to_string(),
            positive: b.to_string(),
            negative: c.to_string(),
        });
    };
    let query = queries
        .get(a.trim())
        .ok_or_else(|| ReadError::malformed(path, line_no, format!("unknown query id `{a}`")))?;
    let passage = |id: &str| {
        corpus.get(id.trim()).map(|d| d.full_text()).ok_or_else(|| {
            ReadError::malformed(path, line_no, format!("unknown document id `{id}`"))
        })
    };
    Ok(Triple {
        query: query.clone(),
        positive: passage(b)?,
        negative: passage(c)?,
    })
}

/// A raw line without its `\n` or `\r\n`.
fn trim_line_end(raw: &[u8]) -> &[u8] {
    let raw = raw.strip_suffix(b"\n").unwrap_or(raw);
    raw.strip_suffix(b"\r").unwrap_or(raw)
}

fn line_text<'a>(path: &Path, line_no: usize, raw: &'a [u8]) -> Result<&'a str, ReadError> {
    std::str::from_utf8(trim_line_end(raw)).map_err(|e| {
        ReadError::malformed(
            path,
            line_no,
            format!("not valid UTF-8 (byte {})", e.valid_up_to() + 1),
        )
    })
}

fn three_fields<'a>(path: &Path, line_no: usize, line: &'a str) -> Result<[&'a str; 3], ReadError> {
    let fields: Vec<&str> = line.split('\t').collect();
    match fields[..] {
        [a, b, c] => Ok([a, b, c]),
        _ => Err(ReadError::malformed(
            path,
            line_no,
            format!(
                "expected 3 tab-separated fields (query, positive, negative), found {}",
                fields.len()
            ),
        )),
    }
}
