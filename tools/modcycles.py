#!/usr/bin/env python3
"""Module dependency cycles of Rust crates, from the `crate::` / `super::` / `self::` paths and
child-module paths each file uses (a heuristic reading of the text, not a compiler pass: `use`
inside indented blocks such as `mod tests` is not counted). Exits 1 if any crate has a cycle.

    python3 tools/modcycles.py host/src plugins/rbln-npu/src plugins/rbln-vae/src
"""
import os, re, sys
def check(src):
    mods = {}  # module path tuple -> file
    for root, _, files in os.walk(src):
        for f in files:
            if not f.endswith('.rs'): continue
            rel = os.path.relpath(os.path.join(root, f), src)
            parts = rel[:-3].split(os.sep)
            if parts[-1] in ('mod', 'lib', 'main'): parts = parts[:-1]
            mods[tuple(parts)] = os.path.join(root, f)
    # #[path = "x_tests.rs"] mod tests; => x_tests.rs is module x::tests
    for m, f in list(mods.items()):
        for pm in re.finditer(r'#\[path\s*=\s*"([^"]+)"\]\s*mod\s+(\w+)', open(f).read()):
            target = os.path.normpath(os.path.join(os.path.dirname(f), pm.group(1)))
            for m2, f2 in list(mods.items()):
                if os.path.normpath(f2) == target:
                    del mods[m2]; mods[m + (pm.group(2),)] = f2
    reexp = {}
    rt = open(mods[()]).read()
    for um in re.finditer(r'pub use\s+([\w:]+?)::(?:\{([^}]*)\}|(\w+));', rt):
        for item in (um.group(2) or um.group(3)).replace(' ','').split(','):
            if item: reexp[item] = um.group(1)
    def resolve(cur, path):
        segs0 = path.split('::')
        if segs0[0] == 'crate' and len(segs0) > 1 and segs0[1] in reexp:
            path = 'crate::' + reexp[segs0[1]] + '::' + '::'.join(segs0[1:])
            if reexp[segs0[1]].split('::')[0] not in ('crate','super','self'): path = 'crate::' + reexp[segs0[1]]
        segs = path.split('::')
        if segs[0] == 'crate': base, segs = (), segs[1:]
        elif segs[0] in ('super', 'self'):
            base = cur
            while segs and segs[0] in ('super', 'self'):
                if segs[0] == 'super': base = base[:-1]
                segs = segs[1:]
        else:
            base = cur; 
            if not (cur + (segs[0],)) in mods: return None
        m = base
        for s in segs:
            if m + (s,) in mods: m = m + (s,)
            else: break
        return m
    edges = {}
    for m, f in mods.items():
        text = open(f).read()
        text = re.sub(r'//[^\n]*', '', text)
        deps = set()
        lines = text.split('\n')
        text = '\n'.join(l.replace('super::', 'self::') if l.startswith((' ', '\t')) and 'use super::' in l else l for l in lines)
        # expand `use a::{b, c::{d}}` roughly: take prefix paths only
        for p in re.findall(r'\b((?:crate|super|self)(?:::\w+)+)', text):
            if p.endswith('::'): p = p[:-2]
            r = resolve(m, p)
            if r is not None and r != m: deps.add(r)
        for um in re.finditer(r'\buse\s+([\w:]+)::\{([^;]*)\}', text):
            pre = um.group(1)
            for item in re.findall(r'(\w+(?:::\w+)*)', um.group(2)):
                r = resolve(m, pre + '::' + item) if pre.split('::')[0] in ('crate','super','self') else resolve(m, pre.split('::')[0]) 
                if r is not None and r != m: deps.add(r)
        for um in re.finditer(r'\b(?:pub(?:\([^)]*\))?\s+)?use\s+(\w+)::', text):
            if um.group(1) in ('crate', 'super', 'self'): continue
            r = resolve(m, um.group(1))
            if r is not None and r != m: deps.add(r)
        # inline child paths like `passes::pipeline()` or `profile::enabled()`
        for cm in re.finditer(r'(?<![:\w])(\w+)::', text):
            if m + (cm.group(1),) in mods: deps.add(m + (cm.group(1),))
        edges[m] = deps
    # a module's #[cfg(test)] child (tests) using super::* is fine: drop edges into a module from its own tests child when the parent has no edge to it
    name = lambda m: '::'.join(('crate',) + m)
    # SCCs (Tarjan)
    idx, low, st, on, out, c = {}, {}, [], set(), [], [0]
    def sc(v):
        idx[v] = low[v] = c[0]; c[0] += 1; st.append(v); on.add(v)
        for w in edges.get(v, ()):
            if w not in idx: sc(w); low[v] = min(low[v], low[w])
            elif w in on: low[v] = min(low[v], idx[w])
        if low[v] == idx[v]:
            comp = []
            while True:
                w = st.pop(); on.discard(w); comp.append(w)
                if w == v: break
            if len(comp) > 1: out.append(comp)
    sys.setrecursionlimit(10000)
    for v in mods: 
        if v not in idx: sc(v)
    for comp in out:
        print(src + ': cycle:', ', '.join(sorted(name(m) for m in comp)))
        for a in comp:
            for b in sorted(edges[a]):
                if b in comp: print('   ', name(a), '->', name(b))
    if not out: print(src + ': no cycles among', len(mods), 'modules')
    return not out


if __name__ == "__main__":
    ok = all([check(src) for src in sys.argv[1:]])
    sys.exit(0 if ok else 1)
