use super::*;
use crate::compiler::build_program;
use crate::program::Target;
use plugin_api::graph::GraphBuilder;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

#[test]
fn random_buffers_never_overlap_while_live() {
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    for _ in 0..50 {
        let bufs: Vec<Buffer> = (0..40)
            .map(|_| {
                let start = rng.gen_range(0..30);
                Buffer {
                    size: rng.gen_range(1..500),
                    start,
                    end: start + rng.gen_range(0..8),
                }
            })
            .collect();
        let (offsets, total) = assign_offsets(&bufs, ALIGN);
        check_no_overlap(&bufs, &offsets).unwrap();
        assert!(offsets.iter().all(|o| o % ALIGN == 0));
        assert!(offsets.iter().zip(&bufs).all(|(o, b)| o + b.size <= total));
        // The arena can never be smaller than what is live at the busiest step.
        let busiest = (0..40)
            .map(|t| {
                bufs.iter()
                    .filter(|b| b.start <= t && t <= b.end)
                    .map(|b| b.size)
                    .sum::<usize>()
            })
            .max()
            .unwrap();
        assert!(total >= busiest);
    }
}

#[test]
fn disjoint_lifetimes_share_memory() {
    let bufs = [
        Buffer {
            size: 100,
            start: 0,
            end: 1,
        },
        Buffer {
            size: 100,
            start: 1,
            end: 2,
        },
        Buffer {
            size: 100,
            start: 2,
            end: 3,
        },
    ];
    let (offsets, total) = assign_offsets(&bufs, 4);
    assert_eq!(offsets[0], offsets[2], "buffer 2 reuses buffer 0's memory");
    assert_ne!(offsets[0], offsets[1]);
    assert_eq!(total, 200);
    let clash = check_no_overlap(&bufs, &[0, 50, 0]).unwrap_err();
    assert!(clash.contains("overlap"), "{clash}");
}

fn chain_program(len: usize) -> crate::program::Program {
    let mut b = GraphBuilder::new("chain");
    let mut v = b.input("x", vec![1, 1000]);
    for i in 0..len {
        v = b.scale(format!("s{i}"), v, 1.5);
    }
    v = b.reshape("flat", v, vec![1000]);
    b.output("y", v);
    build_program(b.finish().unwrap(), Target::default(), &|_, _, _| {}).unwrap()
}

#[test]
fn chain_peak_is_two_values_not_all() {
    let p = chain_program(10);
    let live = analyze(&p);
    assert_eq!(
        live.buffers.len(),
        10,
        "the reshape aliases, it gets no buffer"
    );
    let mem = p.memory.as_ref().unwrap();
    let sum: usize = live.buffers.iter().map(|b| b.size).sum();
    assert!(mem.arena_len < sum, "{} vs {sum}", mem.arena_len);
    assert!(
        mem.arena_len <= 2 * 1008,
        "a chain needs two buffers, got {}",
        mem.arena_len
    );
    let last = p.steps.len() - 1;
    assert_eq!(
        mem.locs[p.steps[last].output],
        mem.locs[p.steps[last].inputs[0]]
    );
    check_plan(&p, mem).unwrap();
}

#[test]
fn tampered_plan_is_rejected() {
    let mut p = chain_program(3);
    let mem = p.memory.as_mut().unwrap();
    // Put the second scale's output on top of its input (live at the same step).
    let (a, b) = (p.steps[1].inputs[0], p.steps[1].output);
    mem.locs[b] = mem.locs[a];
    let mem = p.memory.clone().unwrap();
    let e = check_plan(&p, &mem).unwrap_err();
    assert!(e.contains("overlap"), "{e}");
    let mut short = p.memory.clone().unwrap();
    short.arena_len = 10;
    assert!(check_plan(&p, &short)
        .unwrap_err()
        .contains("inconsistent location"));
}
