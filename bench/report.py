"""Write bench/results/REPORT.md and its PNG plots from the JSON results there.

    .venv/bin/python bench/report.py

Reads whatever results exist (a benchmark not run yet is reported as missing), reads each
against the goals of the benchmarks issue, and never edits a number: every figure in the
report is a field of a JSON file beside it, written by a script anyone can rerun.
"""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def load(name: str) -> dict | None:
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def bar(name: str, title: str, labels: list[str], values: list[float], ylabel: str,
        line: float | None = None, line_label: str = "") -> str:
    fig, ax = plt.subplots(figsize=(6, 3.2))
    bars = ax.bar(labels, values, color="#4477aa")
    ax.bar_label(bars, fmt="%g", fontsize=8)
    if line is not None:
        ax.axhline(line, color="#cc3311", linestyle="--", linewidth=1, label=line_label)
        ax.legend(fontsize=8)
    ax.set_title(title, fontsize=10)
    ax.set_ylabel(ylabel)
    ax.tick_params(axis="x", labelsize=8)
    fig.tight_layout()
    fig.savefig(RESULTS / f"{name}.png", dpi=110)
    plt.close(fig)
    return f"![{title}]({name}.png)"


def grouped(name: str, title: str, groups: list[str], series: dict[str, list[float]], ylabel: str,
            line: float | None = None, line_label: str = "") -> str:
    fig, ax = plt.subplots(figsize=(6, 3.2))
    width = 0.8 / len(series)
    for i, (label, values) in enumerate(series.items()):
        xs = [g + i * width for g in range(len(groups))]
        ax.bar_label(ax.bar(xs, values, width, label=label), fmt="%g", fontsize=7)
    if line is not None:
        ax.axhline(line, color="#cc3311", linestyle="--", linewidth=1, label=line_label)
    ax.set_xticks([g + width * (len(series) - 1) / 2 for g in range(len(groups))], groups, fontsize=8)
    ax.set_title(title, fontsize=10)
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(RESULTS / f"{name}.png", dpi=110)
    plt.close(fig)
    return f"![{title}]({name}.png)"


def yes(ok: bool) -> str:
    return "met" if ok else "**not met**"


def main() -> None:
    pipe, peer, fresh, fresh_load = load("pipeline"), load("peer_langchain"), load("freshness"), load("freshness_load")
    emb, acl = load("embedding_runtime"), load("acl_search")
    goals: list[tuple[str, str, str]] = []
    body: list[str] = []

    if pipe:
        r = pipe["runs"][0]
        ratio = r["ratio_to_ceiling"]
        goals.append(("pipeline throughput ≥ 0.9 of the embedding ceiling",
                      f"{ratio} ({r['initial_load']['chunks_per_s']} vs {r['embedding_ceiling']['chunks_per_s']} chunks/s)",
                      yes(ratio >= 0.9)))
        rss = r["worker_peak_rss_mib"]
        goals.append(("each stage worker < 1 GiB resident", f"max {max(rss.values())} MiB ({max(rss, key=rss.get)})",
                      yes(max(rss.values()) < 1024)))
        body += [f"## Initial load ({pipe['docs']} documents, {r['chunks']} chunks; `bench/pipeline.py`)", "",
                 f"{r['initial_load']['docs_per_s']} documents/s, {r['initial_load']['chunks_per_s']} chunks/s from the "
                 f"first event to searchable, against {r['embedding_ceiling']['chunks_per_s']} chunks/s for the model "
                 f"alone ({r['embedding_ceiling']['runtime']}) on the same chunks: ratio {ratio}.", "",
                 bar("initial_load", "Initial load vs embedding ceiling (chunks/s)", ["pipeline", "model alone"],
                     [r["initial_load"]["chunks_per_s"], r["embedding_ceiling"]["chunks_per_s"]], "chunks/s"), "",
                 bar("stage_busy", "Where the time goes: busy seconds per stage", list(r["stage_busy_seconds"]),
                     list(r["stage_busy_seconds"].values()), "seconds",
                     r["initial_load"]["seconds"], "wall clock of the load"), "",
                 bar("worker_rss", "Peak resident memory per stage worker", list(rss), list(rss.values()), "MiB",
                     1024, "1 GiB"), ""]
        if "deletes" in r:
            d = r["deletes"]
            body += [f"**Deletes**: {d['docs_deleted']} files deleted at once → all their rows gone from Milvus "
                     f"after {d['seconds_until_all_gone']} s.", ""]
        if "scaling" in pipe:
            sc = pipe["scaling"]
            same = sc["identical_result"]
            body += ["## Scaling the embed stage (same consumer group)", "",
                     bar("scaling", "Initial load by number of embed workers", [f"{k} worker(s)" for k in sc["chunks_per_s"]],
                         list(sc["chunks_per_s"].values()), "chunks/s"), "",
                     f"Speed-up {sc['speedup']}x. Same index: chunk ids identical = {same['same_chunk_ids']}, "
                     f"lowest cosine between the two runs' vectors of a chunk = {same['min_cosine_same_chunk']}.", ""]
    if pipe and peer and "incremental" in pipe["runs"][0]:
        ours, theirs = pipe["runs"][0]["incremental"], peer["incremental"]
        speedup = round(theirs["seconds_to_converge"] / ours["seconds_to_converge"], 1)
        goals.append(("incremental update ≥ 10x faster than the peer",
                      f"{speedup}x ({ours['seconds_to_converge']} s vs {theirs['seconds_to_converge']} s)", yes(speedup >= 10)))
        body += ["## Incremental update and the peer (LangChain indexing API; `bench/peer_langchain.py`)", "",
                 f"One paragraph edited in {ours['docs_edited']} documents. ragstream re-embedded "
                 f"{ours['chunks_reembedded']} chunks (of {ours['chunks_in_edited_docs']} in those documents) and "
                 f"converged in {ours['seconds_to_converge']} s; LangChain re-embedded {theirs['chunks_reembedded']} "
                 f"in {theirs['seconds_to_converge']} s. Initial load: ragstream "
                 f"{pipe['runs'][0]['initial_load']['seconds']} s, LangChain {peer['initial_load']['seconds']} s.", "",
                 grouped("peer", "ragstream vs LangChain indexing API (seconds)", ["initial load", "incremental"],
                         {"ragstream": [pipe["runs"][0]["initial_load"]["seconds"], ours["seconds_to_converge"]],
                          "LangChain": [peer["initial_load"]["seconds"], theirs["seconds_to_converge"]]}, "seconds"), ""]
    big, big_peer = load("pipeline_1000"), load("peer_langchain_1000")
    if big and big_peer and "incremental" in big["runs"][0]:
        ours, theirs = big["runs"][0]["incremental"], big_peer["incremental"]
        speedup = round(theirs["seconds_to_converge"] / ours["seconds_to_converge"], 1)
        goals.append((f"… the same at {big['docs']:,} documents", f"{speedup}x ({ours['seconds_to_converge']} s vs "
                      f"{theirs['seconds_to_converge']} s)", yes(speedup >= 10)))
        body += [f"At {big['docs']:,} documents (`bench/pipeline.py --docs {big['docs']} --workers 1 --out "
                 f"bench/results/pipeline_1000.json`, the peer likewise): ragstream re-embedded "
                 f"{ours['chunks_reembedded']} chunks in {ours['seconds_to_converge']} s, LangChain "
                 f"{theirs['chunks_reembedded']} in {theirs['seconds_to_converge']} s; initial load "
                 f"{big['runs'][0]['initial_load']['chunks_per_s']} vs {big_peer['initial_load']['chunks_per_s']} "
                 "chunks/s.", "",
                 grouped("incremental_by_size", "Incremental update: seconds to converge", [
                     f"{pipe['docs']} docs" if pipe else "", f"{big['docs']} docs"],
                     {"ragstream": [pipe["runs"][0]["incremental"]["seconds_to_converge"] if pipe else 0,
                                    ours["seconds_to_converge"]],
                      "LangChain": [peer["incremental"]["seconds_to_converge"] if peer else 0,
                                    theirs["seconds_to_converge"]]}, "seconds"), ""]
    if fresh:
        goals.append(("freshness p95 ≤ 1 s on an idle pipeline", f"{fresh['change_to_indexed_s']['p95']} s",
                      yes(fresh["change_to_indexed_s"]["p95"] <= 1)))
        series = {"idle": [fresh["change_to_indexed_s"][q] for q in ("p50", "p95", "p99")]}
        text = f"Idle: p50 {fresh['change_to_indexed_s']['p50']} s, p95 {fresh['change_to_indexed_s']['p95']} s."
        if fresh_load:
            series[f"under load ({fresh_load['background_edits_per_s']} edits/s)"] = [
                fresh_load["change_to_indexed_s"][q] for q in ("p50", "p95", "p99")]
            text += (f" Under a background load of {fresh_load['background_edits_per_s']} document edits/s: "
                     f"p50 {fresh_load['change_to_indexed_s']['p50']} s, p95 {fresh_load['change_to_indexed_s']['p95']} s.")
        body += ["## Freshness (`bench/freshness.py`)", "", text,
                 f" Delete → gone (idle): p95 {fresh['delete_to_gone_s']['p95']} s.", "",
                 grouped("freshness", "File change → searchable (s)", ["p50", "p95", "p99"], series, "seconds", 1.0,
                         "goal p95"), ""]
    if emb:
        rts = emb["runtimes"]
        best = max((n for n in rts if n != "local"), key=lambda n: rts[n]["chunks_per_s"])
        goals.append(("a faster embedding runtime ≥ 2x the baseline with cosine ≥ 0.99",
                      f"{best}: {rts[best]['speedup']}x, cosine mean {rts[best]['cosine_mean']}",
                      yes(rts[best]["speedup"] >= 2 and rts[best]["cosine_mean"] >= 0.99)))
        body += ["## Embedding runtime (`bench/embedding_runtime.py`)", "",
                 bar("embedding_runtime", "Embedding throughput by runtime (chunks/s)", list(rts),
                     [rts[n]["chunks_per_s"] for n in rts], "chunks/s"), "",
                 "| runtime | chunks/s | speed-up | cosine mean / min | peak RSS MiB |", "|---|---|---|---|---|",
                 *[f"| {n} | {v['chunks_per_s']} | {v['speedup']} | {v['cosine_mean']} / {v['cosine_min']} | "
                   f"{v['peak_rss_mib']} |" for n, v in rts.items()], ""]
    if acl:
        res = acl["results"]
        callers = [c for c in res if c != "unfiltered"]
        body += [f"## ACL-filtered search ({acl['rows']:,} chunks; `bench/acl_search.py`)", "",
                 grouped("acl_search", "Search latency by caller (ms)", list(res),
                         {"p50": [res[c]["p50_ms"] for c in res], "p95": [res[c]["p95_ms"] for c in res]}, "ms", 50,
                         "50 ms"), "",
                 "| caller | p95 ms | vs unfiltered | recall@10 |", "|---|---|---|---|",
                 *[f"| {c} | {res[c]['p95_ms']} | {res[c].get('p95_vs_unfiltered', 1.0)} | {res[c]['recall_at_10']} |"
                   for c in res], ""]
        goals.append(("ACL search p95 ≤ 1.5x unfiltered and < 50 ms (issue 5)",
                      ", ".join(f"{c} {res[c]['p95_ms']} ms ({res[c]['p95_vs_unfiltered']}x)" for c in callers),
                      yes(bool(acl["goal_met"]))))
    lines = ["# Benchmark report", "",
             "Generated by `bench/report.py` from the JSON files in this folder; rerun everything with "
             "`./dev bench`. Machine: 2 cores. Read it against the goals, which the benchmarks are not tuned to.", "",
             "| goal | measured | |", "|---|---|---|", *[f"| {g} | {m} | {ok} |" for g, m, ok in goals], "", *body]
    missing = [n for n, d in [("pipeline", pipe), ("peer_langchain", peer), ("freshness", fresh),
                              ("freshness_load", fresh_load), ("embedding_runtime", emb), ("acl_search", acl)] if not d]
    if missing:
        lines += [f"Not measured yet: {', '.join(missing)}.", ""]
    (RESULTS / "REPORT.md").write_text("\n".join(lines))
    print(f"wrote {RESULTS / 'REPORT.md'}")


if __name__ == "__main__":
    main()
