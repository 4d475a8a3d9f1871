//! Which rows of a batch go to which task's copy, and putting the copies' rows back in order.

use candle_core::{Device, Result, Tensor};
use peftbench_core::ForwardCtx;

/// A batch's rows by task.
#[derive(Debug)]
pub enum Route {
    /// Every row belongs to this task (single-task data, or a batch of one task): the copy sees
    /// the batch as it is, with no gathering.
    Single(usize),
    /// Rows of several tasks.
    Split {
        rows: usize,
        /// Each present task (ascending) with the positions of its rows (u32), ascending.
        groups: Vec<(usize, Tensor)>,
        /// Position of each original row in the concatenation of the groups' rows (u32 `[rows]`):
        /// `cat(groups) . index_select(inverse)` restores the batch order.
        inverse: Tensor,
    },
}

impl Route {
    /// The route of `ctx`'s task ids over `n_tasks` copies; no task ids = every row is task 0.
    pub fn of(ctx: &ForwardCtx, n_tasks: usize, device: &Device) -> Result<Self> {
        let Some(ids) = ctx.task_ids() else {
            return Ok(Self::Single(0));
        };
        let ids: Vec<u32> = ids
            .to_dtype(candle_core::DType::U32)?
            .flatten_all()?
            .to_vec1()?;
        if let Some(bad) = ids.iter().find(|&&t| t as usize >= n_tasks) {
            candle_core::bail!(
                "task id {bad} in the batch, but n_tasks is {n_tasks} (ids 0 to {})",
                n_tasks - 1
            );
        }
        Self::from_ids(&ids, n_tasks, device)
    }

    pub fn from_ids(ids: &[u32], n_tasks: usize, device: &Device) -> Result<Self> {
        match ids.first() {
            None => return Ok(Self::Single(0)),
            Some(&first) if ids.iter().all(|&t| t == first) => {
                return Ok(Self::Single(first as usize))
            }
            Some(_) => {}
        }
        let mut inverse = vec![0u32; ids.len()];
        let mut groups = Vec::new();
        let mut next = 0u32;
        for task in 0..n_tasks as u32 {
            let positions: Vec<u32> = (0..ids.len() as u32)
                .filter(|&i| ids[i as usize] == task)
                .collect();
            if positions.is_empty() {
                continue;
            }
            for &i in &positions {
                inverse[i as usize] = next;
                next += 1;
            }
            let n = positions.len();
            groups.push((task as usize, Tensor::from_vec(positions, n, device)?));
        }
        Ok(Self::Split {
            rows: ids.len(),
            groups,
            inverse: Tensor::from_vec(inverse, ids.len(), device)?,
        })
    }

    /// Rows the route was made for (`None` for [`Route::Single`], which fits any batch).
    pub fn rows(&self) -> Option<usize> {
        match self {
            Self::Single(_) => None,
            Self::Split { rows, .. } => Some(*rows),
        }
    }

    /// Fails unless a hook's batch of `rows` rows is the batch the task ids describe.
    pub fn check_rows(&self, rows: usize) -> Result<()> {
        match self.rows() {
            Some(n) if n != rows => {
                candle_core::bail!("a hook saw {rows} rows but the batch has {n} task ids")
            }
            _ => Ok(()),
        }
    }
}

/// The route of the current forward pass, worked out once per batch: every hook of a pass sees
/// the same task-id tensor, so its id keys the cache (ids are never reused).
#[derive(Debug, Default)]
pub struct RouteCache {
    last: std::cell::RefCell<Option<(candle_core::TensorId, std::rc::Rc<Route>)>>,
}

impl RouteCache {
    pub fn route(
        &self,
        ctx: &ForwardCtx,
        n_tasks: usize,
        device: &Device,
    ) -> Result<std::rc::Rc<Route>> {
        let Some(ids) = ctx.task_ids() else {
            return Ok(std::rc::Rc::new(Route::Single(0)));
        };
        if let Some((id, route)) = &*self.last.borrow() {
            if *id == ids.id() {
                return Ok(route.clone());
            }
        }
        let route = std::rc::Rc::new(Route::of(ctx, n_tasks, device)?);
        *self.last.borrow_mut() = Some((ids.id(), route.clone()));
        Ok(route)
    }
}

/// Concatenates the groups' outputs (in the route's group order) and puts the rows back in batch
/// order; gathers are differentiable, so each row's gradient flows to its own copy only.
pub fn merge(pieces: &[Tensor], inverse: &Tensor) -> Result<Tensor> {
    Tensor::cat(pieces, 0)?.index_select(inverse, 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_and_inverse_restore_the_order() -> Result<()> {
        let ids = [2u32, 0, 2, 1, 0];
        let Route::Split {
            groups, inverse, ..
        } = Route::from_ids(&ids, 3, &Device::Cpu)?
        else {
            panic!("mixed tasks split");
        };
        let tasks: Vec<usize> = groups.iter().map(|(t, _)| *t).collect();
        assert_eq!(tasks, [0, 1, 2]);
        let x = Tensor::new(&[10f32, 11., 12., 13., 14.], &Device::Cpu)?;
        let pieces: Vec<Tensor> = groups
            .iter()
            .map(|(_, idx)| x.index_select(idx, 0))
            .collect::<Result<_>>()?;
        assert_eq!(
            merge(&pieces, &inverse)?.to_vec1::<f32>()?,
            [10., 11., 12., 13., 14.]
        );
        assert!(matches!(
            Route::from_ids(&[1, 1], 3, &Device::Cpu)?,
            Route::Single(1)
        ));
        Ok(())
    }
}
