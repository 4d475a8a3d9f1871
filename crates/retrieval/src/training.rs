//! Training groups for the cross-encoder's listwise objective (one relevant passage followed by
//! `n` non-relevant ones, `peftbench_train::ranking_loss::listwise_softmax`'s layout), built from
//! MS MARCO triples or from a first-stage run's hard negatives (Gao et al. 2021's "localized
//! contrastive estimation": negatives sampled from the retriever's top candidates).

use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::File;
use std::hash::{Hash, Hasher};
use std::io::BufReader;

use peftbench_metrics::trec::{Qrels, Run};
use rand::seq::IndexedRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::corpus::Corpus;
use crate::error::ReadError;
use crate::queries::Queries;
use crate::triples::{Triple, TriplesFile};

/// A query, a relevant passage and non-relevant passages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RankingGroup {
    /// Query text.
    pub query: String,
    /// Relevant passage (column 0 of the listwise scores).
    pub positive: String,
    /// Non-relevant passages (columns 1..).
    pub negatives: Vec<String>,
}

/// Groups built from some source, and how many candidates could not fill a group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Groups {
    /// Groups with exactly the requested number of negatives.
    pub groups: Vec<RankingGroup>,
    /// Candidate groups left out for having fewer negatives than requested.
    pub incomplete: usize,
}

/// Groups triples by (query, positive): each (query, positive)'s distinct negatives, in order of
/// appearance, are cut into groups of `negatives`, so every negative is used once (MS MARCO lists
/// many negatives per pair). Groups come in order of their pair's first appearance; a pair's last
/// group with fewer than `negatives` negatives is left out and counted in `incomplete`. With
/// `negatives = 1` every distinct triple is a group (the pairwise case).
pub fn groups_from_triples(triples: &[Triple], negatives: usize) -> Groups {
    let negatives = negatives.max(1);
    let mut order: Vec<(&str, &str)> = Vec::new();
    let mut gathered: BTreeMap<(&str, &str), Vec<&str>> = BTreeMap::new();
    for triple in triples {
        let key = (triple.query.as_str(), triple.positive.as_str());
        let list = gathered.entry(key).or_insert_with(|| {
            order.push(key);
            Vec::new()
        });
        if !list.contains(&triple.negative.as_str()) {
            list.push(triple.negative.as_str());
        }
    }
    let mut groups = Vec::new();
    let mut incomplete = 0;
    for key in order {
        for chunk in gathered[&key].chunks(negatives) {
            if chunk.len() < negatives {
                incomplete += 1;
                continue;
            }
            groups.push(RankingGroup {
                query: key.0.to_string(),
                positive: key.1.to_string(),
                negatives: chunk.iter().map(|s| s.to_string()).collect(),
            });
        }
    }
    Groups { groups, incomplete }
}

/// The groups [`groups_from_triples`] makes of a triples file, kept as the byte offsets of their
/// lines instead of their texts, so a file of any size trains in memory that grows by 8 bytes a
/// used triple (16 while indexing), not by its texts or tokens; each batch reads its groups' lines
/// back ([`GroupIndex::group`]). Pairs and negatives are told apart by 64-bit hashes of their
/// texts (two different ones colliding is a 2^-64 chance per pair).
pub struct GroupIndex {
    /// Per group, the offsets of its lines: the first gives the query and positive, each its
    /// negative.
    groups: Vec<Vec<u64>>,
    /// Candidate groups left out for having fewer negatives than requested.
    pub incomplete: usize,
    /// Triples read (at most the cap).
    pub triples: usize,
}

impl GroupIndex {
    /// Reads the first `cap` triples of `file` (all when `None`) once and indexes their groups of
    /// `negatives`, in [`groups_from_triples`]' order.
    pub fn build(
        file: &TriplesFile,
        negatives: usize,
        cap: Option<usize>,
    ) -> Result<Self, ReadError> {
        let negatives = negatives.max(1);
        let hash = |parts: &[&str]| {
            let mut h = DefaultHasher::new();
            parts.hash(&mut h);
            h.finish()
        };
        // Pairs in order of first appearance, each with its distinct negatives' hashes and lines.
        let mut order: Vec<u64> = Vec::new();
        let mut gathered: HashMap<u64, (HashSet<u64>, Vec<u64>)> = HashMap::new();
        let triples = file.for_each(cap, |offset, t| {
            let key = hash(&[&t.query, &t.positive]);
            let (seen, lines) = gathered.entry(key).or_insert_with(|| {
                order.push(key);
                Default::default()
            });
            if seen.insert(hash(&[&t.negative])) {
                lines.push(offset);
            }
        })?;
        let mut groups = Vec::new();
        let mut incomplete = 0;
        for key in order {
            for chunk in gathered[&key].1.chunks(negatives) {
                if chunk.len() < negatives {
                    incomplete += 1;
                } else {
                    groups.push(chunk.to_vec());
                }
            }
        }
        Ok(Self {
            groups,
            incomplete,
            triples,
        })
    }

    pub fn len(&self) -> usize {
        self.groups.len()
    }

    pub fn is_empty(&self) -> bool {
        self.groups.is_empty()
    }

    /// Group `index`, read back from `file` through `reader`.
    pub fn group(
        &self,
        file: &TriplesFile,
        reader: &mut BufReader<File>,
        index: usize,
    ) -> Result<RankingGroup, ReadError> {
        let lines = &self.groups[index];
        let first = file.triple_at(reader, lines[0])?;
        let mut negatives = vec![first.negative];
        for &offset in &lines[1..] {
            negatives.push(file.triple_at(reader, offset)?.negative);
        }
        Ok(RankingGroup {
            query: first.query,
            positive: first.positive,
            negatives,
        })
    }
}

/// One group per relevant (query, document) pair of `qrels` (grade at least `relevance_level`),
/// its negatives drawn without replacement from the run's top `pool_depth` documents that are not
/// relevant, with a ChaCha8 generator seeded by `seed` (the same seed gives the same groups).
/// Queries of the qrels absent from the run give no group and are not counted as incomplete;
/// every query and document id used must have a text.
pub fn hard_negative_groups(
    run: &Run,
    qrels: &Qrels,
    queries: &Queries,
    corpus: &Corpus,
    relevance_level: i64,
    pool_depth: usize,
    negatives: usize,
    seed: u64,
) -> anyhow::Result<Groups> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let text = |doc: &str| {
        corpus
            .get(doc)
            .map(|d| d.full_text())
            .ok_or_else(|| anyhow::anyhow!("document `{doc}` is not in the corpus"))
    };
    let mut groups = Vec::new();
    let mut incomplete = 0;
    for (query_id, judgements) in qrels.iter() {
        let ranking = run.ranking(query_id);
        if ranking.is_empty() {
            continue;
        }
        let query = queries
            .get(query_id)
            .ok_or_else(|| anyhow::anyhow!("query `{query_id}` has no text"))?;
        let is_relevant = |doc: &str| judgements.get(doc).is_some_and(|&g| g >= relevance_level);
        let pool: Vec<&str> = ranking
            .iter()
            .take(pool_depth)
            .map(|(doc, _)| *doc)
            .filter(|doc| !is_relevant(doc))
            .collect();
        for (positive, _) in judgements.iter().filter(|(doc, _)| is_relevant(doc)) {
            if pool.len() < negatives {
                incomplete += 1;
                continue;
            }
            let drawn = pool
                .choose_multiple(&mut rng, negatives)
                .map(|doc| text(doc))
                .collect::<anyhow::Result<Vec<String>>>()?;
            groups.push(RankingGroup {
                query: query.clone(),
                positive: text(positive)?,
                negatives: drawn,
            });
        }
    }
    Ok(Groups { groups, incomplete })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::corpus::Document;

    fn triple(q: &str, p: &str, n: &str) -> Triple {
        Triple {
            query: q.into(),
            positive: p.into(),
            negative: n.into(),
        }
    }

    /// Indexed from the file and read back group by group, the groups are those
    /// `groups_from_triples` makes of the triples in memory: pairs interleaved, repeated
    /// negatives, a capped read, text and id triples.
    #[test]
    fn the_group_index_reads_back_the_in_memory_groups() {
        let dir = tempfile::tempdir().unwrap();
        let lines = [
            ("q1", "p1", "n1"),
            ("q2", "p2", "n4"),
            ("q1", "p1", "n2"),
            ("q1", "p1", "n1"),
            ("q2", "p2", "n5"),
            ("q1", "p1", "n3"),
            ("q1", "p9", "n1"),
            ("q2", "p2", "n6"),
        ];
        let text_path = dir.path().join("triples.tsv");
        let body: String = lines
            .iter()
            .map(|(q, p, n)| format!("query {q}\tpassage {p}\tpassage {n}\r\n"))
            .collect();
        std::fs::write(&text_path, format!("{body}\n")).unwrap();
        let id_path = dir.path().join("ids.tsv");
        let ids: String = lines
            .iter()
            .map(|(q, p, n)| format!("{q}\t{p}\t{n}\n"))
            .collect();
        std::fs::write(&id_path, ids).unwrap();
        let queries: Queries = ["q1", "q2"]
            .iter()
            .map(|q| (q.to_string(), format!("query {q}")))
            .collect();
        let corpus: Corpus = ["p1", "p2", "p9", "n1", "n2", "n3", "n4", "n5", "n6"]
            .iter()
            .map(|d| {
                let doc = Document {
                    title: String::new(),
                    text: format!("passage {d}"),
                };
                (d.to_string(), doc)
            })
            .collect();
        let lookup = std::sync::Arc::new((queries, corpus));
        let in_memory: Vec<Triple> = lines
            .iter()
            .map(|(q, p, n)| {
                triple(
                    &format!("query {q}"),
                    &format!("passage {p}"),
                    &format!("passage {n}"),
                )
            })
            .collect();
        for file in [
            TriplesFile::text(&text_path),
            TriplesFile::ids(&id_path, lookup.clone()),
        ] {
            for (negatives, cap) in [(1, None), (2, None), (2, Some(5)), (3, None)] {
                let expected =
                    groups_from_triples(&in_memory[..cap.unwrap_or(lines.len())], negatives);
                let index = GroupIndex::build(&file, negatives, cap).unwrap();
                let mut reader = file.reader().unwrap();
                let read: Vec<RankingGroup> = (0..index.len())
                    .map(|g| index.group(&file, &mut reader, g).unwrap())
                    .collect();
                assert_eq!(read, expected.groups, "{negatives} negatives, cap {cap:?}");
                assert_eq!(index.incomplete, expected.incomplete);
                assert_eq!(index.triples, cap.unwrap_or(lines.len()));
            }
        }
        std::fs::write(&text_path, "a\tb\tc\nonly two\tfields\n").unwrap();
        let e = GroupIndex::build(&TriplesFile::text(&text_path), 1, None)
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.contains("triples.tsv:2: expected 3 tab-separated fields"),
            "{e}"
        );
    }

    #[test]
    fn triples_grouped_by_query_and_positive() {
        let triples = [
            triple("q1", "p1", "n1"),
            triple("q2", "p2", "m1"),
            triple("q1", "p1", "n1"),
            triple("q1", "p1", "n2"),
            triple("q1", "p1", "n3"),
        ];
        // q1/p1 has the distinct negatives n1, n2, n3: one group of two and n3 left over; q2/p2
        // has one negative, too few for a group of two.
        let grouped = groups_from_triples(&triples, 2);
        assert_eq!(grouped.incomplete, 2);
        assert_eq!(grouped.groups.len(), 1);
        assert_eq!(grouped.groups[0].negatives, ["n1", "n2"]);
        let pairs = groups_from_triples(&triples, 1);
        assert_eq!(pairs.incomplete, 0);
        let negatives: Vec<&str> = pairs
            .groups
            .iter()
            .map(|g| g.negatives[0].as_str())
            .collect();
        assert_eq!(negatives, ["n1", "n2", "n3", "m1"]);
    }

    #[test]
    fn hard_negatives_exclude_relevant_and_are_seeded() {
        let corpus: Corpus = (0..10)
            .map(|i| {
                let doc = Document {
                    title: String::new(),
                    text: format!("text {i}"),
                };
                (format!("d{i}"), doc)
            })
            .collect();
        let queries: Queries = [("q".to_string(), "query".to_string())].into();
        let mut run = Run::new();
        for i in 0..10 {
            run.insert("q", format!("d{i}"), 10.0 - i as f64).unwrap();
        }
        let mut qrels = Qrels::new();
        qrels.insert("q", "d1", 1).unwrap();
        qrels.insert("q", "d3", 2).unwrap();
        qrels.insert("q", "d2", 0).unwrap();
        qrels.insert("absent", "d1", 1).unwrap();
        let build =
            |seed| hard_negative_groups(&run, &qrels, &queries, &corpus, 1, 5, 3, seed).unwrap();
        let groups = build(7);
        assert_eq!((groups.groups.len(), groups.incomplete), (2, 0));
        for group in &groups.groups {
            assert_eq!(group.negatives.len(), 3);
            // The pool is the top 5 without the relevant d1 and d3: d0, d2, d4.
            for negative in &group.negatives {
                assert!(["text 0", "text 2", "text 4"].contains(&negative.as_str()));
            }
        }
        assert_eq!(build(7), groups);
        let too_many = hard_negative_groups(&run, &qrels, &queries, &corpus, 1, 5, 4, 0).unwrap();
        assert_eq!((too_many.groups.len(), too_many.incomplete), (0, 2));
    }
}
