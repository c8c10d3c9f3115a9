"""``python -m synclr_monai neighbours``: which synapses look like this one?

Exact nearest-neighbour search by cosine similarity over every synapse of the embeddings file: the
vectors are unit length, so the similarities of a block of queries to all synapses are one matrix
product (on the CPU or a GPU with torch), and ``topk`` keeps the best k of each block. Blocks bound
the memory (``block_size x N`` similarities at a time), so all-against-all search of 10^5 synapses
(the outlier scores, the label-propagation graph) runs in bounded memory; one query over 10^5
synapses is a single matrix-vector product (``benchmarks/neighbours.py`` prints the times).

Outputs: ``neighbours.csv`` (query, rank, bbox_name, Var1, id, similarity) and one gallery PNG per
query (the query and its neighbours as three orthogonal slices of the raw EM, masks outlined).
"""

from __future__ import annotations

import argparse
import logging
import re

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from synclr_monai.atlas.common import (
    Atlas,
    AtlasInputError,
    add_common_arguments,
    load_atlas,
    load_cubes,
    out_dir,
    read_query_ids,
    synapse_id,
)
from synclr_monai.atlas.gallery import plot_gallery
from synclr_monai.errors import run_command
from synclr_monai.utils import atomic_output

__all__ = ["cosine_knn", "find_neighbours", "build_parser", "main"]

logger = logging.getLogger("synclr_monai.atlas.neighbours")


def cosine_knn(
    vectors: np.ndarray | torch.Tensor,
    k: int,
    queries: np.ndarray | None = None,
    exclude_self: bool = True,
    block_size: int = 1024,
    device: str | torch.device = "cpu",
    progress: bool = False,
    unit: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Exact k nearest neighbours by cosine similarity (blocked matrix product + top-k).

    Args:
        vectors: ``[N, F]`` embeddings (normalised here; zero vectors have similarity 0 to all).
        k: neighbours per query (capped at the number of candidates).
        queries: row numbers of the query synapses (default: every row, all against all).
        exclude_self: a query is not its own neighbour (a duplicate under another id still is).
        block_size: queries per matrix product (memory: ``block_size x N`` floats).
        device: where to compute (``"cuda"`` for large sets on a GPU).
        progress: show a progress bar over the blocks.
        unit: the rows are unit length already (an :class:`Atlas`'s are): skip normalising all N vectors,
            which would cost more than one query's product.

    Returns:
        ``(indices [Q, k] int64, similarities [Q, k] float32)``, best first; ties keep the lower row.

    Raises:
        ValueError: for ``k`` < 1, a bad ``block_size``, or query rows out of range.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if block_size < 1:
        raise ValueError(f"block_size must be >= 1, got {block_size}")
    base = torch.as_tensor(np.asarray(vectors, dtype=np.float32) if not torch.is_tensor(vectors) else vectors)
    base = base.float() if unit else torch.nn.functional.normalize(base.float(), dim=1)
    base = base.to(device)
    n = base.shape[0]
    rows = np.arange(n) if queries is None else np.asarray(queries, dtype=np.int64).reshape(-1)
    if len(rows) and (rows.min() < 0 or rows.max() >= n):
        raise ValueError(f"query rows must be in [0, {n}), got {rows.min()}..{rows.max()}")
    k = min(k, n - 1 if exclude_self else n)
    if k < 1:
        raise ValueError("no candidate neighbours: the embeddings hold a single synapse")
    out_idx = np.empty((len(rows), k), dtype=np.int64)
    out_sim = np.empty((len(rows), k), dtype=np.float32)
    starts = range(0, len(rows), block_size)
    with torch.inference_mode():
        for start in tqdm(starts, disable=not progress, desc="neighbours", unit="block"):
            block = torch.as_tensor(rows[start : start + block_size], device=base.device)
            sims = base[block] @ base.T
            if exclude_self:
                sims[torch.arange(len(block), device=base.device), block] = -torch.inf
            # topk is not stable; nudging by the row number makes ties resolve to the lower row, so
            # results do not depend on the block size or the device
            values, index = torch.topk(sims - 1e-7 * torch.arange(n, device=base.device) / n, k, dim=1)
            out_idx[start : start + len(block)] = index.cpu().numpy()
            out_sim[start : start + len(block)] = sims.gather(1, index).cpu().numpy()
    return out_idx, out_sim


def find_neighbours(
    atlas: Atlas,
    queries: pd.DataFrame,
    k: int = 10,
    device: str | torch.device = "cpu",
) -> pd.DataFrame:
    """The k nearest synapses of each query synapse, dataset-wide.

    Args:
        atlas: the embeddings.
        queries: ``bbox_name``, ``Var1`` of the query synapses.
        k: neighbours per query.
        device: where to compute.

    Returns:
        A frame ``query, rank, bbox_name, Var1, id, similarity`` (rank 1 = most similar), ``k`` rows a query.

    Raises:
        AtlasInputError: if a query id is not in the embeddings file.
    """
    rows = atlas.index(queries, source="--query")
    index, sims = cosine_knn(atlas.vectors, k, queries=rows, device=device, unit=True)
    names = atlas.names
    records = []
    for q, (nbrs, sim) in zip(rows, zip(index, sims)):
        for rank, (j, s) in enumerate(zip(nbrs, sim), start=1):
            records.append(
                {
                    "query": names[q],
                    "rank": rank,
                    "bbox_name": atlas.ids["bbox_name"].iloc[j],
                    "Var1": atlas.ids["Var1"].iloc[j],
                    "id": names[j],
                    "similarity": float(s),
                }
            )
    return pd.DataFrame(records)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``neighbours`` command."""
    p = argparse.ArgumentParser(
        prog="python -m synclr_monai neighbours",
        description="The k nearest synapses of one or more query synapses by cosine similarity, as a table and "
        "a gallery of three orthogonal slices each.",
    )
    add_common_arguments(p)
    p.add_argument(
        "--query",
        required=True,
        nargs="+",
        help="synapse id(s) bboxN:Var1 or bboxN_Var1, or a CSV of ids (bbox_name, Var1 or id columns)",
    )
    p.add_argument("-k", "--k", type=int, default=10, help="neighbours per query (default 10)")
    p.add_argument("--device", default="cpu", help="device of the search (default cpu)")
    p.add_argument("--no-gallery", action="store_true", help="write the table only (no dataset needed)")
    return p


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


def _run(args: argparse.Namespace) -> int:
    if args.k < 1:
        raise AtlasInputError(f"-k must be >= 1, got {args.k}")
    queries = read_query_ids(args.query)
    atlas = load_atlas(args.embeddings, args.dataset_dir, require_dataset=not args.no_gallery)
    table = find_neighbours(atlas, queries, k=args.k, device=args.device)
    folder = out_dir(args)
    csv_path = folder / "neighbours.csv"
    with atomic_output(csv_path) as tmp:
        table.to_csv(tmp, index=False, float_format="%.6f")
    for query, group in table.groupby("query", sort=False):
        print(f"\nnearest synapses of {query}:")
        print(group[["rank", "id", "similarity"]].to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    print(f"\ntable: {csv_path}")
    if args.no_gallery:
        return 0
    pairs = list(zip(queries["bbox_name"], queries["Var1"]))
    needed = [atlas.index([q])[0] for q in pairs]
    needed += atlas.index(table[["bbox_name", "Var1"]]).tolist()
    cubes = dict(zip(needed, load_cubes(atlas, needed, args.cube_size, args.cache_dir)))
    for (b, v), q in zip(pairs, needed):
        group = table[table["query"] == synapse_id(b, v)]
        rows = [q, *atlas.index(group[["bbox_name", "Var1"]]).tolist()]
        titles = [f"query\n{synapse_id(b, v)}"] + [
            f"#{r.rank}\n{r.id}\nsim {r.similarity:.3f}" for r in group.itertuples()
        ]
        png = plot_gallery(
            [cubes[r] for r in rows],
            titles,
            folder / f"neighbours_{_safe(synapse_id(b, v))}.png",
            suptitle=f"{synapse_id(b, v)} and its {len(group)} nearest synapses (cosine similarity); "
            "pre-synaptic cyan, cleft red",
        )
        print(f"gallery: {png}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run the ``neighbours`` command; 0 on success, 2 for bad usage or input."""
    return run_command(build_parser(), _run, argv)
