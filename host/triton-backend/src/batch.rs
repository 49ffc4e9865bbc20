//! Fitting Triton's requests into executions of the compiled batch: grouping whole requests,
//! padding a partial batch with zeros, and handing each request back only its own rows.

use std::ops::Range;

/// Groups consecutive requests (given by their item counts, each at most `batch`) into
/// executions of at most `batch` items, in order. A request is never split.
pub fn plan(items: &[usize], batch: usize) -> Vec<Range<usize>> {
    let mut groups = Vec::new();
    let mut start = 0;
    let mut n = 0;
    for (i, &k) in items.iter().enumerate() {
        if n + k > batch && i > start {
            groups.push(start..i);
            start = i;
            n = 0;
        }
        n += k;
    }
    if start < items.len() {
        groups.push(start..items.len());
    }
    groups
}

/// The input of one execution: the requests' rows back to back, then zero rows up to `batch`.
pub fn assemble(parts: &[&[f32]], row: usize, batch: usize) -> Vec<f32> {
    let mut data = Vec::with_capacity(batch * row);
    for p in parts {
        data.extend_from_slice(p);
    }
    data.resize(batch * row, 0.0);
    data
}

/// The rows of `output` (one execution's output, `batch` rows) that belong to each request, by
/// item counts in execution order; the padding rows belong to none.
pub fn split<'a>(output: &'a [f32], batch: usize, items: &[usize]) -> Vec<&'a [f32]> {
    let row = output.len() / batch;
    let mut at = 0;
    items
        .iter()
        .map(|&k| {
            let part = &output[at * row..(at + k) * row];
            at += k;
            part
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_groups_whole_requests_up_to_the_batch() {
        assert_eq!(plan(&[1, 1, 1, 1], 4), vec![0..4]);
        assert_eq!(plan(&[2, 2, 1], 4), vec![0..2, 2..3]);
        assert_eq!(plan(&[3, 2, 2, 4], 4), vec![0..1, 1..3, 3..4]);
        assert_eq!(plan(&[1], 4), vec![0..1]);
        assert_eq!(plan(&[], 4), Vec::<Range<usize>>::new());
    }

    #[test]
    fn padding_is_zero_and_never_handed_back() {
        let a = [1.0, 2.0];
        let b = [3.0, 4.0, 5.0, 6.0];
        let data = assemble(&[&a, &b], 2, 4);
        assert_eq!(data, vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 0.0, 0.0]);
        // An output with 3 values per row; row 3 is padding.
        let out: Vec<f32> = (0..12).map(|v| v as f32).collect();
        let parts = split(&out, 4, &[1, 2]);
        assert_eq!(parts, vec![&out[0..3], &out[3..9]]);
        assert_eq!(parts.iter().map(|p| p.len()).sum::<usize>(), 9);
    }
}
