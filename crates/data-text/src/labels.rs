//! Class names to ids, in a fixed order so that ids do not depend on file order.

use std::collections::BTreeMap;

/// The classes of a task, sorted by name (or in the order a suite lists them).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LabelSet {
    names: Vec<String>,
}

impl LabelSet {
    /// Classes in the given order (a suite's explicit `labels:`).
    pub fn new(names: Vec<String>) -> Self {
        Self { names }
    }

    /// The distinct labels of `labels`, sorted.
    pub fn from_labels<'a>(labels: impl IntoIterator<Item = &'a str>) -> Self {
        let mut names: Vec<String> = labels.into_iter().map(str::to_string).collect();
        names.sort();
        names.dedup();
        Self { names }
    }

    pub fn names(&self) -> &[String] {
        &self.names
    }

    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    pub fn id(&self, name: &str) -> Option<u32> {
        self.names.iter().position(|n| n == name).map(|i| i as u32)
    }

    pub fn name(&self, id: u32) -> Option<&str> {
        self.names.get(id as usize).map(String::as_str)
    }

    /// Label name -> id, for reports.
    pub fn to_map(&self) -> BTreeMap<String, u32> {
        self.names
            .iter()
            .enumerate()
            .map(|(i, n)| (n.clone(), i as u32))
            .collect()
    }
}

/// A data format's own class list, such as SIB-200's seven categories.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FormatLabels {
    /// The format as suites name it (`sib200`), for messages.
    pub format: &'static str,
    /// The classes in the format's order.
    pub names: &'static [&'static str],
}

/// A task whose declared number of classes matches neither the labels in its data nor its format's
/// class list; the message lists both, so the fix (declare the data's number, or list `labels`)
/// is plain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabelMismatch {
    pub num_classes: usize,
    /// The distinct labels of the data, sorted.
    pub in_data: Vec<String>,
    pub format: Option<FormatLabels>,
}

impl std::fmt::Display for LabelMismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the task declares num_classes {} but its data has {} labels ({})",
            self.num_classes,
            self.in_data.len(),
            name_list(&self.in_data)
        )?;
        if let Some(format) = &self.format {
            write!(
                f,
                " and the {} format's classes are {} ({})",
                format.format,
                format.names.len(),
                name_list(format.names)
            )?;
        }
        write!(
            f,
            "; declare num_classes {}, or list the task's `labels` to fix their order and number",
            self.in_data.len()
        )
    }
}

impl std::error::Error for LabelMismatch {}

/// `a, b, c`, cut after the first 30 names of a long list.
fn name_list<S: AsRef<str>>(names: &[S]) -> String {
    const SHOWN: usize = 30;
    let mut text = names
        .iter()
        .take(SHOWN)
        .map(AsRef::as_ref)
        .collect::<Vec<_>>()
        .join(", ");
    if names.len() > SHOWN {
        text.push_str(&format!(", ... ({} more)", names.len() - SHOWN));
    }
    text
}

impl LabelSet {
    /// The classes of a task that declares `num_classes` but no `labels`, from the labels
    /// `present` in its data. The format's own list, in its order (so that ids do not depend on
    /// which classes a split happens to hold), when the data uses only its labels and the task
    /// declares that many; otherwise the data's labels, sorted, when there are `num_classes` of
    /// them: a user's own classes in a format's layout are read as they are, never replaced by
    /// the format's.
    pub fn for_task<'a>(
        num_classes: usize,
        format: Option<FormatLabels>,
        present: impl IntoIterator<Item = &'a str>,
    ) -> Result<Self, LabelMismatch> {
        let in_data = Self::from_labels(present);
        if let Some(f) = format {
            let within_format = in_data.names.iter().all(|n| f.names.contains(&n.as_str()));
            if within_format && f.names.len() == num_classes {
                return Ok(Self::new(f.names.iter().map(|n| n.to_string()).collect()));
            }
        }
        if in_data.len() == num_classes {
            return Ok(in_data);
        }
        Err(LabelMismatch {
            num_classes,
            in_data: in_data.names,
            format,
        })
    }
}
