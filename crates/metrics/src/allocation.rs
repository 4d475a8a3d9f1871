//! How well a learned task-to-skill allocation (Poly/MHR's routing) recovers a known one.
//!
//! Learned skills carry no names: skill 3 of the inventory may have become the true skill
//! `colour`, or nothing at all. The score therefore takes the best one-to-one naming of learned
//! skills by true ones (every injective map from the `k` true skills into the learned inventory,
//! exhaustively: inventories in the demos hold a handful of skills), and under it counts the tasks
//! whose top learned skills (as many as the task truly reads) are exactly the skills it reads.

/// The fraction of tasks whose top-`|truth[t]|` learned skills are, under the best naming of
/// learned skills by true ones, the true skills of the task.
///
/// `allocation[t][s]` is task `t`'s weight on learned skill `s`; `truth[t]` the true skills (in
/// `0..k`) task `t` reads. `None` when the inventory has fewer skills than the truth (no
/// one-to-one naming exists), when the inputs are empty, or when it is too large to search
/// (more than 40,320 namings).
pub fn allocation_recovery(allocation: &[Vec<f64>], truth: &[Vec<usize>], k: usize) -> Option<f64> {
    let learned = allocation.first()?.len();
    if allocation.len() != truth.len() || learned < k || k == 0 || namings(learned, k) > 40_320 {
        return None;
    }
    // Each task's top learned skills, ties broken towards the lower index.
    let top: Vec<Vec<usize>> = allocation
        .iter()
        .zip(truth)
        .map(|(weights, skills)| {
            let mut order: Vec<usize> = (0..weights.len()).collect();
            order.sort_by(|&a, &b| weights[b].total_cmp(&weights[a]).then(a.cmp(&b)));
            let mut top = order[..skills.len().min(order.len())].to_vec();
            top.sort_unstable();
            top
        })
        .collect();
    let mut best = 0usize;
    let mut naming = vec![usize::MAX; k];
    let mut used = vec![false; learned];
    search(0, &mut naming, &mut used, &top, truth, &mut best);
    Some(best as f64 / truth.len() as f64)
}

fn namings(learned: usize, k: usize) -> usize {
    (learned - k + 1..=learned).product()
}

/// Tries every injective `naming` (true skill -> learned skill), keeping the best count.
fn search(
    skill: usize,
    naming: &mut [usize],
    used: &mut [bool],
    top: &[Vec<usize>],
    truth: &[Vec<usize>],
    best: &mut usize,
) {
    if skill == naming.len() {
        let hits = top
            .iter()
            .zip(truth)
            .filter(|(top, skills)| {
                let mut named: Vec<usize> = skills.iter().map(|&s| naming[s]).collect();
                named.sort_unstable();
                &named == *top
            })
            .count();
        *best = (*best).max(hits);
        return;
    }
    for learned in 0..used.len() {
        if !used[learned] {
            used[learned] = true;
            naming[skill] = learned;
            search(skill + 1, naming, used, top, truth, best);
            used[learned] = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The true allocation, with its skills renamed, scores 1; swapping one task's weights makes
    /// that task (and only it) miss; a uniform allocation scores what ties happen to give.
    #[test]
    fn recovers_a_renamed_allocation_and_counts_misses() {
        let truth = vec![vec![0, 1], vec![1, 2], vec![0, 2]];
        // Learned skill 2 is true skill 0, 0 is true 1, 1 is true 2; learned skill 3 is unused.
        let renamed = |skills: &[usize]| -> Vec<f64> {
            let map = [2, 0, 1];
            let mut w = vec![0.05; 4];
            for &s in skills {
                w[map[s]] = 0.9;
            }
            w
        };
        let allocation: Vec<Vec<f64>> = truth.iter().map(|t| renamed(t)).collect();
        assert_eq!(allocation_recovery(&allocation, &truth, 3), Some(1.0));
        let mut wrong = allocation.clone();
        wrong[1] = vec![0.9, 0.05, 0.05, 0.9];
        assert_eq!(allocation_recovery(&wrong, &truth, 3), Some(2.0 / 3.0));
        assert_eq!(
            allocation_recovery(&allocation, &truth, 5),
            None,
            "too few learned skills"
        );
    }
}
