"""Derive the mediapipe-468 -> iBUG-68 table of ``train/detector.py`` (its docstring states the rules).

Runs mediapipe 0.10.14's face mesh on scikit-image's ``astronaut.png`` and places each iBUG point
on mediapipe's own contours (``face_mesh_connections.FACEMESH_*``) by 3-D arc length, so the
photo's head pose does not matter. Prints the table as JSON rows ``[i, j, w]``:
iBUG point k = w * mesh[i] + (1 - w) * mesh[j].

    python scripts/derive_ibug68_table.py
"""
import collections, json, sys
import numpy as np
from mediapipe.python.solutions import face_mesh_connections as c
import mediapipe as mp
from skimage import data

img = data.astronaut()
H, W = img.shape[:2]
with mp.solutions.face_mesh.FaceMesh(static_image_mode=True, max_num_faces=1) as fm:
    r = fm.process(img)
lm = r.multi_face_landmarks[0].landmark
P = np.array([[p.x * W, p.y * H, p.z * W] for p in lm])  # (468, 3)

up = P[10] - P[152]; up /= np.linalg.norm(up)
right = P[263] - P[33]; right -= right.dot(up) * up; right /= np.linalg.norm(right)
R = lambda i: P[i].dot(right)
U = lambda i: P[i].dot(up)

def chains(conn):
    adj = collections.defaultdict(set)
    for a, b in conn: adj[a].add(b); adj[b].add(a)
    seen, out = set(), []
    ends = [k for k, v in adj.items() if len(v) == 1]
    starts = ends if ends else [next(iter(adj))]
    for s in starts:
        if s in seen: continue
        path = [s]; seen.add(s)
        while True:
            nxt = [n for n in adj[path[-1]] if n not in seen]
            if not nxt: break
            path.append(nxt[0]); seen.add(nxt[0])
        out.append(path)
    # remaining cycles
    for s in adj:
        if s in seen: continue
        path = [s]; seen.add(s)
        while True:
            nxt = [n for n in adj[path[-1]] if n not in seen]
            if not nxt: break
            path.append(nxt[0]); seen.add(nxt[0])
        out.append(path)
    return out

def arc_point(path, frac):
    """(i, j, w): point at fraction frac of the 3-D arc length of path = w*P[i] + (1-w)*P[j]."""
    seg = np.linalg.norm(np.diff(P[path], axis=0), axis=1)
    cum = np.concatenate([[0], np.cumsum(seg)])
    t = frac * cum[-1]
    k = min(np.searchsorted(cum, t, side='right') - 1, len(path) - 2)
    a = (t - cum[k]) / max(seg[k], 1e-9)
    a = float(np.clip(a, 0, 1))
    return (int(path[k]), int(path[k + 1]), round(1 - a, 3))

def sub_path(cycle, a, b, prefer_up):
    """Path along the cycle from a to b going through the side with higher (prefer_up) / lower U."""
    n = len(cycle); ia, ib = cycle.index(a), cycle.index(b)
    p1 = [cycle[(ia + k) % n] for k in range((ib - ia) % n + 1)]
    p2 = [cycle[(ia - k) % n] for k in range((ia - ib) % n + 1)]
    m1, m2 = np.mean([U(i) for i in p1[1:-1]]), np.mean([U(i) for i in p2[1:-1]])
    return p1 if (m1 > m2) == prefer_up else p2

table = [None] * 68
# eyes
for name, idx0 in (("RIGHT", 36), ("LEFT", 42)):
    cyc = chains(getattr(c, f"FACEMESH_{name}_EYE"))[0]
    lo, hi = min(cyc, key=R), max(cyc, key=R)  # image-left, image-right corners
    if name == "RIGHT":  # 36 outer(lo) 37 38 upper 39 inner(hi) 40 41 lower
        upper = sub_path(cyc, lo, hi, True); lower = sub_path(cyc, hi, lo, False)
    else:  # 42 inner(lo) 43 44 upper 45 outer(hi) 46 47 lower
        upper = sub_path(cyc, lo, hi, True); lower = sub_path(cyc, hi, lo, False)
    table[idx0] = (lo, lo, 1.0); table[idx0 + 3] = (hi, hi, 1.0)
    table[idx0 + 1] = arc_point(upper, 1 / 3); table[idx0 + 2] = arc_point(upper, 2 / 3)
    table[idx0 + 4] = arc_point(lower, 1 / 3); table[idx0 + 5] = arc_point(lower, 2 / 3)
# brows: upper chain, image-left to image-right
for name, idx0 in (("RIGHT", 17), ("LEFT", 22)):
    ch = chains(getattr(c, f"FACEMESH_{name}_EYEBROW"))
    top = max(ch, key=lambda p: np.mean([U(i) for i in p]))
    if R(top[0]) > R(top[-1]): top = top[::-1]
    for k in range(5): table[idx0 + k] = arc_point(top, k / 4)
# lips
rings = chains(c.FACEMESH_LIPS)
spread = lambda p: max(R(i) for i in p) - min(R(i) for i in p)
outer, inner = sorted(rings, key=spread, reverse=True)
lo, hi = min(outer, key=R), max(outer, key=R)
up_o = sub_path(outer, lo, hi, True); low_o = sub_path(outer, hi, lo, False)
table[48] = (lo, lo, 1.0); table[54] = (hi, hi, 1.0)
for k in range(1, 6): table[48 + k] = arc_point(up_o, k / 6); table[54 + k] = arc_point(low_o, k / 6)
lo, hi = min(inner, key=R), max(inner, key=R)
up_i = sub_path(inner, lo, hi, True); low_i = sub_path(inner, hi, lo, False)
table[60] = (lo, lo, 1.0); table[64] = (hi, hi, 1.0)
for k in range(1, 4): table[60 + k] = arc_point(up_i, k / 4); table[64 + k] = arc_point(low_i, k / 4)
# nose bridge: midline 168 -> tip (most forward of 4, 1, 19)
fwd = np.cross(right, up)
tip = max((4, 1, 19), key=lambda i: P[i].dot(fwd))
mid = [168, 6, 197, 195, 5, 4, 1, 19, 94, 2]
bridge = mid[: mid.index(tip) + 1]
for k in range(4): table[27 + k] = arc_point(bridge, k / 3)
# lower nose: 33 = subnasale 2; 31/35 most lateral point of each nostril chain, 32/34 half way
table[33] = (2, 2, 1.0)
nose = c.FACEMESH_NOSE
adj = collections.defaultdict(set)
for a, b in nose: adj[a].add(b); adj[b].add(a)
for first, idx_out, idx_mid in ((97, 31, 32), (326, 35, 34)):
    path = [2, first]
    while path[-1] != 4:
        nxt = [n for n in adj[path[-1]] if n not in path]
        path.append(nxt[0])
    side = min if idx_out == 31 else max
    outer_pt = side(path, key=R)
    sub = path[: path.index(outer_pt) + 1]
    table[idx_out] = (outer_pt, outer_pt, 1.0)
    table[idx_mid] = arc_point(sub, 0.5)
# jaw: face oval below the mean eye-corner height, image-left -> image-right, 17 points
oval = chains(c.FACEMESH_FACE_OVAL)[0]
h = np.mean([U(i) for i in (33, 133, 362, 263)])
n = len(oval); k0 = oval.index(152)
# walk from the chin both ways until U rises above h
def walk(step):
    out = [152]; k = k0
    while True:
        k = (k + step) % n
        out.append(oval[k])
        if U(oval[k]) > h: break
    return out
a, b = walk(1), walk(-1)
left_side, right_side = (a, b) if R(a[-1]) < R(b[-1]) else (b, a)   # image-left side first
# exact crossing of height h on the last segment: trim by fraction
def trimmed(path):
    p, q = P[path[-2]], P[path[-1]]
    t = (h - p.dot(up)) / (q.dot(up) - p.dot(up))
    return path, t
jaw_path = left_side[::-1] + right_side[1:]
# arc from the crossing on the left to the crossing on the right
seg = np.linalg.norm(np.diff(P[jaw_path], axis=0), axis=1)
cum = np.concatenate([[0], np.cumsum(seg)])
_, tl = trimmed(left_side); _, tr = trimmed(right_side)
s0 = (1 - tl) * seg[0]; s1 = cum[-1] - (1 - tr) * seg[-1]
for k in range(17):
    t = s0 + (s1 - s0) * k / 16
    j = min(np.searchsorted(cum, t, side='right') - 1, len(jaw_path) - 2)
    aa = float(np.clip((t - cum[j]) / seg[j], 0, 1))
    table[k] = (int(jaw_path[j]), int(jaw_path[j + 1]), round(1 - aa, 3))
assert all(t is not None for t in table)
print(json.dumps(table))
