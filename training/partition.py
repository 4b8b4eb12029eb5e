"""Split the cached training sequences into K federated clients: IID, by content (free or equal sizes), or
with quantity skew.

Input is the cache's ``{group: uint8 array (N, T, H, W, 3)}`` (groups like 'video/sam2_01_dog',
'images/urban100_half'). Output is one `ClientData` per client. Every scheme is deterministic in
its seed, so a SuperNode that partitions the same file gets the same slice as the in-process runner.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SCHEMES = ("iid", "content", "content-equal", "quantity")


@dataclass(frozen=True)
class ClientData:
    """One client's local training material."""

    client: int  # partition id, 0..K-1
    seqs: np.ndarray  # uint8 sequences (N, T, H, W, 3)
    sources: tuple[str, ...]  # cache groups the sequences come from

    def summary(self) -> dict:
        """Size and sources, for history.json."""
        return {"client": self.client, "sequences": len(self.seqs), "sources": list(self.sources)}


def scene_type(group: str) -> str:
    """Content type of a cache group: every real video clip is 'video', each image set its own type."""
    return group.split("/", 1)[0] if group.startswith("video/") else group


def _check(groups: dict[str, np.ndarray], k: int) -> int:
    total = sum(len(v) for v in groups.values())
    if k < 1:
        raise ValueError(f"need at least one client, got {k}")
    if total < k:
        raise ValueError(f"{total} sequences cannot feed {k} clients; use fewer clients or more data")
    return total


def _pool(groups: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """All sequences in group-name order, the index of each one's group, and the group names."""
    names = sorted(groups)
    seqs = np.concatenate([groups[g] for g in names])
    origin = np.concatenate([np.full(len(groups[g]), i) for i, g in enumerate(names)])
    return seqs, origin, names


def _deal(seqs: np.ndarray, origin: np.ndarray, names: list[str], shares: list[np.ndarray]) -> list[ClientData]:
    out = []
    for c, idx in enumerate(shares):
        idx = np.sort(idx)
        out.append(ClientData(c, seqs[idx], tuple(names[i] for i in np.unique(origin[idx]))))
    return out


def iid(groups: dict[str, np.ndarray], k: int, seed: int) -> list[ClientData]:
    """Shuffle all sequences together and deal them into K near-equal shares."""
    _check(groups, k)
    seqs, origin, names = _pool(groups)
    order = np.random.default_rng(seed).permutation(len(seqs))
    return _deal(seqs, origin, names, np.array_split(order, k))


def _bins_by_type(groups: dict[str, np.ndarray]) -> list[list[tuple[str, np.ndarray]]]:
    """One bin per scene type, each a list of (group, sequences), in name order."""
    bins: dict[str, list[tuple[str, np.ndarray]]] = {}
    for g in sorted(groups):
        if len(groups[g]):
            bins.setdefault(scene_type(g), []).append((g, groups[g]))
    return list(bins.values())


def _size(b: list[tuple[str, np.ndarray]]) -> int:
    return sum(len(a) for _, a in b)


def _split(b: list[tuple[str, np.ndarray]]) -> tuple[list, list]:
    """Halve a bin: by whole groups if it has several, else the group's sequences in two runs."""
    if len(b) > 1:
        half, acc, cut = _size(b) / 2, 0, 1
        for i, (_, a) in enumerate(b[:-1]):
            acc += len(a)
            cut = i + 1
            if acc >= half:
                break
        return b[:cut], b[cut:]
    (g, a), = b
    m = len(a) // 2  # contiguous halves: an image set's sequences are cut per source image in order
    return [(g, a[:m])], [(g, a[m:])]


def by_content(groups: dict[str, np.ndarray], k: int, seed: int = 0) -> list[ClientData]:
    """Each client gets different sources: start with one bin per scene type (`scene_type`), then
    split the largest bin or merge the two smallest until there are K. Deterministic; ``seed`` unused."""
    _check(groups, k)
    bins = _bins_by_type(groups)
    while len(bins) > k:
        bins.sort(key=_size)
        bins = [bins[0] + bins[1]] + bins[2:]
    while len(bins) < k:
        bins.sort(key=_size, reverse=True)
        if _size(bins[0]) < 2:
            raise ValueError(f"cannot make {k} content clients from {sum(len(v) for v in groups.values())} sequences")
        bins = [*_split(bins[0]), *bins[1:]]
    bins.sort(key=lambda b: b[0][0])  # client order follows source names, not sizes
    return [ClientData(c, np.concatenate([a for _, a in b]), tuple(dict.fromkeys(g for g, _ in b)))
            for c, b in enumerate(bins)]


def content_equal(groups: dict[str, np.ndarray], k: int, seed: int = 0) -> list[ClientData]:
    """Non-IID by content with equal sizes: every sequence ordered by scene type, then source, then
    position, cut into K contiguous near-equal shares, so each client sees one or two content types
    (the sorted shards of McMahan et al. 2017, and the equal-size splits of the FedVSR paper).
    Deterministic; ``seed`` unused."""
    _check(groups, k)
    names = sorted((g for g in groups if len(groups[g])), key=lambda g: (scene_type(g), g))
    seqs = np.concatenate([groups[g] for g in names])
    origin = np.concatenate([np.full(len(groups[g]), i) for i, g in enumerate(names)])
    return _deal(seqs, origin, names, np.array_split(np.arange(len(seqs)), k))


def quantity_skew(groups: dict[str, np.ndarray], k: int, seed: int, alpha: float = 1.0) -> list[ClientData]:
    """IID content but Dirichlet(alpha) client sizes (smaller alpha, stronger skew); each client >= 1."""
    total = _check(groups, k)
    rng = np.random.default_rng(seed)
    share = rng.dirichlet(np.full(k, alpha))
    sizes = 1 + np.floor(share * (total - k)).astype(int)
    sizes[np.argmax(share)] += total - sizes.sum()
    seqs, origin, names = _pool(groups)
    order = rng.permutation(total)
    return _deal(seqs, origin, names, np.split(order, np.cumsum(sizes)[:-1]))


def partition(groups: dict[str, np.ndarray], k: int, scheme: str, seed: int = 0) -> list[ClientData]:
    """K clients from the cache groups with ``scheme`` in SCHEMES."""
    if scheme == "iid":
        return iid(groups, k, seed)
    if scheme == "content":
        return by_content(groups, k, seed)
    if scheme == "content-equal":
        return content_equal(groups, k, seed)
    if scheme == "quantity":
        return quantity_skew(groups, k, seed)
    raise ValueError(f"unknown partition {scheme!r}; known: {', '.join(SCHEMES)}")
