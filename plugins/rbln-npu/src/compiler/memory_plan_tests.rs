use super::*;
use crate::compiler::build_program;
use crate::program::liveness::{check_no_overlap, check_plan};
use crate::program::{Program, Target};
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

/// `len` scales (`in_place`) or softmaxes (which have no in-place kernel) in a chain, then a
/// reshape.
fn chain_program(len: usize, in_place: bool) -> Program {
    let mut b = GraphBuilder::new("chain");
    let mut v = b.input("x", vec![1, 1000]);
    for i in 0..len {
        v = if in_place {
            b.scale(format!("s{i}"), v, 1.5)
        } else {
            b.softmax(format!("s{i}"), v)
        };
    }
    v = b.reshape("flat", v, vec![1000]);
    b.output("y", v);
    build_program(b.finish().unwrap(), Target::default(), &|_, _, _| {}).unwrap()
}

#[test]
fn chain_peak_is_two_values_not_all() {
    let p = chain_program(10, false);
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
fn in_place_chain_needs_one_buffer() {
    let p = chain_program(10, true);
    let live = analyze(&p);
    // The first scale reads the caller's input; the others overwrite their operand.
    assert_eq!(live.buffers.len(), 1);
    let mem = p.memory.as_ref().unwrap();
    assert_eq!(mem.arena_len, 1000);
    let first = mem.locs[p.steps[0].output];
    assert!(p.steps.iter().all(|s| mem.locs[s.output] == first));
    check_plan(&p, mem).unwrap();
}

#[test]
fn tampered_plan_is_rejected() {
    let mut p = chain_program(3, false);
    let mem = p.memory.as_mut().unwrap();
    // Put the second softmax's output on top of its input (live at the same step; softmax has
    // no in-place kernel).
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

/// `a = scale(x)`, `n = group_norm(a)`, `s = add(n, a)`, `t = add(x, s)`: the group norm may not
/// overwrite `a` (the first add reads it later), the first add overwrites `n` (operand 0: both
/// die there, the first in-place slot wins) and the second add overwrites `s` (operand 1: `x` is
/// the caller's input). `check_plan` accepts exactly these aliases.
#[test]
fn in_place_only_where_the_operand_dies() {
    let mut g = GraphBuilder::new("alias");
    let x = g.input("x", vec![1, 4, 8, 8]);
    let gamma = g.constant("gamma", vec![4], vec![1.0; 4]);
    let beta = g.constant("beta", vec![4], vec![0.0; 4]);
    let a = g.scale("a", x, 2.0);
    let n = g.group_norm("n", a, gamma, beta, 2, 1e-6);
    let s = g.add("s", n, a);
    let t = g.add("t", x, s);
    g.output("y", t);
    let p = build_program(g.finish().unwrap(), Target::default(), &|_, _, _| {}).unwrap();
    let names: Vec<&str> = p.steps.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["a", "n", "s", "t"]);
    let live = analyze(&p);
    let buf = |i: usize| live.buffer_of[p.steps[i].output].unwrap();
    assert_ne!(buf(1), buf(0), "a is still read by s");
    assert_eq!(buf(2), buf(1), "s overwrites n");
    assert_eq!(buf(3), buf(2), "t overwrites s");
    assert_eq!(live.root[p.steps[3].output], p.steps[1].output);
    // 256 floats each, both live at steps 1 and 2.
    let (a_buf, n_buf) = (live.buffers[buf(0)], live.buffers[buf(1)]);
    assert_eq!((a_buf.start, a_buf.end), (0, 2));
    assert_eq!((n_buf.start, n_buf.end), (1, 4));
    let mem = p.memory.clone().unwrap();
    assert_eq!(mem.arena_len, 2 * 256);
    check_plan(&p, &mem).unwrap();

    // The group norm written over its operand while the add still needs it.
    let (av, nv) = (p.steps[1].inputs[0], p.steps[1].output);
    let mut bad = mem.clone();
    for v in [nv, p.steps[2].output, p.steps[3].output] {
        bad.locs[v] = mem.locs[av];
    }
    let e = check_plan(&p, &bad).unwrap_err();
    assert!(e.contains("overlap"), "{e}");
    // An add written over the caller's input is not even an arena location.
    let mut bad = mem.clone();
    bad.locs[p.steps[3].output] = Loc::Input(0);
    let e = check_plan(&p, &bad).unwrap_err();
    assert!(e.contains("inconsistent location"), "{e}");
}
