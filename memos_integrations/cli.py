"""The ``memos`` command line: demo, users, cubes, add, search, chat, explain, list, history,
export, import, stats, maintain, audit and forget-user over a store: the embedded SQLite
file (``--db`` or MEMOS_HOME), a PostgreSQL URL (``--db postgresql://...`` or
MEMOS_PG_URL) or a private embedded PostgreSQL (``--embedded-pg DIR``); and ``prune`` and
``experts``, which need no store: they prune a local Llama-family model for a task (or once per
task, with a router between them) and save the smaller models."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .core.chat import MEMORY_MODES
from .core.engine import MemOS
from .core.errors import InvalidInput, MemOSError
from .core.items import MemoryItem


def _item_row(item: MemoryItem) -> dict[str, Any]:
    return item.to_dict()


def _print_items(items: Sequence[MemoryItem], as_json: bool, scores: Sequence[float] = ()) -> None:
    if as_json:
        rows = [
            _item_row(it) | ({"score": s} if scores else {})
            for it, s in zip(items, scores or [None] * len(items), strict=True)
        ]
        print(json.dumps(rows, indent=2, ensure_ascii=False))
        return
    for n, item in enumerate(items):
        score = f"{scores[n]:.4f} " if scores else ""
        print(
            f"{score}{item.id}  [{item.state}] v{item.version} {item.kind:8} "
            f"{item.cube_id}: {item.text}"
        )


def _read_records(path: Path) -> list[Any]:
    """JSON Lines: each line a string, a chat message or a memory dict."""
    records = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if line.strip():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise InvalidInput(f"{path}:{n} is not JSON: {exc}") from None
    return records


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="memos", description=__doc__)
    where = p.add_mutually_exclusive_group()
    where.add_argument(
        "--db",
        help="SQLite file or postgresql:// URL (default: $MEMOS_PG_URL, else $MEMOS_HOME/memos.db)",
    )
    where.add_argument(
        "--embedded-pg",
        metavar="DIR",
        type=Path,
        help="start (or join) a private PostgreSQL with pgvector whose data lives in DIR",
    )
    sub = p.add_subparsers(dest="command", required=True)

    sub.add_parser("demo", help="run the scripted two-user memory demo")

    s = sub.add_parser("create-user", help="register a user")
    s.add_argument("user_id")
    s.add_argument("--role", default="user", choices=["user", "admin", "guest"])

    s = sub.add_parser("create-cube", help="create a cube")
    s.add_argument("name")
    s.add_argument("--owner", required=True)

    s = sub.add_parser("grant", help="share a cube with a user")
    s.add_argument("cube")
    s.add_argument("--to", required=True)
    s.add_argument("--access", default="read", choices=["read", "write"])

    s = sub.add_parser("add", help="add memories (texts, or --file JSONL for bulk ingest)")
    s.add_argument("texts", nargs="*")
    s.add_argument("--file", type=Path, help="JSON Lines of texts, messages or memory dicts")
    s.add_argument("--user", required=True)
    s.add_argument("--cube")
    s.add_argument("--session")
    s.add_argument("--kind")
    s.add_argument("--tag", action="append", dest="tags")

    s = sub.add_parser("search", help="hybrid search")
    s.add_argument("query")
    s.add_argument("--user", required=True)
    s.add_argument("-k", type=int, default=5)
    s.add_argument("--cube", action="append", dest="cubes")
    s.add_argument("--mode", default="hybrid", choices=["hybrid", "dense", "text"])
    s.add_argument("--json", action="store_true")

    s = sub.add_parser("chat", help="answer from memory with the local model (SmolLM2)")
    s.add_argument("query")
    s.add_argument("--user", required=True)
    s.add_argument("--cube", help="where the user's hot set lives (default: their only cube)")
    s.add_argument("-k", type=int, default=5)
    s.add_argument("--memory", default="auto", choices=list(MEMORY_MODES))
    s.add_argument("--max-new-tokens", type=int, default=256)
    s.add_argument("--explain", action="store_true", help="also print which tier served what")
    s.add_argument("--experts", type=Path, help="answer with the task experts in this directory")

    s = sub.add_parser("explain", help="what a chat turn would use (no model run, no access)")
    s.add_argument("query")
    s.add_argument("--user", required=True)
    s.add_argument("--cube", help="where the user's hot set lives (default: their only cube)")
    s.add_argument("-k", type=int, default=5)
    s.add_argument("--memory", default="auto", choices=list(MEMORY_MODES))

    s = sub.add_parser("list", help="list memories")
    s.add_argument("--user")
    s.add_argument("--cube")
    s.add_argument("--state", action="append", dest="states")
    s.add_argument("--limit", type=int, default=50)
    s.add_argument("--json", action="store_true")

    s = sub.add_parser("history", help="versions and transitions of a memory")
    s.add_argument("item_id")
    s.add_argument("--user")

    s = sub.add_parser("export", help="export a cube to a directory")
    s.add_argument("cube")
    s.add_argument("path", type=Path)
    s.add_argument("--user")

    s = sub.add_parser("import", help="import a cube export")
    s.add_argument("path", type=Path)
    s.add_argument("--owner")
    s.add_argument("--cube-id")

    s = sub.add_parser("stats", help="counts by state and kind")
    s.add_argument("--user")

    s = sub.add_parser(
        "prune", help="prune a local Llama-family model for a task and save the smaller model"
    )
    s.add_argument("--task", required=True, help="built-in task name or a multiple-choice JSONL")
    s.add_argument("--out", type=Path, required=True, help="directory for the pruned model")
    s.add_argument("--model", help="model directory or .gguf (default: MEMOS_MODEL or SmolLM2)")
    s.add_argument(
        "--method",
        default="seap",
        choices=["seap", "seap_norm", "flap", "wanda_sp", "flap_lb", "wanda_lb"],
    )
    s.add_argument("--sparsity", type=float, default=0.2, help="share of attention+FFN weights")
    s.add_argument("--calibration", type=int, default=200, help="calibration texts")
    s.add_argument(
        "--bias",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="FLAP's bias compensation (default: only for flap)",
    )
    s.add_argument(
        "--sequential",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="prune layer by layer, each on the pruned layers' outputs (always for wanda_*)",
    )
    s.add_argument("--eval", type=int, default=0, metavar="N", help="score N items before/after")
    s.add_argument(
        "--speed",
        type=int,
        default=0,
        metavar="ROUNDS",
        help="time greedy decoding (batch 1, 48 tokens) of dense vs pruned in ROUNDS "
        "interleaved rounds; the speedup is the median of the per-round ratios",
    )
    _schedule_args(s)

    s = sub.add_parser(
        "experts",
        help="prune the local model once per task (SEAP), train a router between the experts, "
        "and save them (chat --experts DIR answers with them)",
    )
    s.add_argument(
        "--tasks",
        required=True,
        help="comma-separated task names or JSONL files; '+' joins look-alike tasks into one "
        "expert (e.g. arc_easy+arc_challenge,boolq,piqa)",
    )
    s.add_argument("--sparsity", type=float, default=0.2, help="share of attention+FFN weights")
    s.add_argument(
        "--out", type=Path, help="default: $MEMOS_HOME/experts/<model>-seap[-bias]-<pct>"
    )
    s.add_argument("--model", help="model directory or .gguf (default: MEMOS_MODEL or SmolLM2)")
    s.add_argument("--calibration", type=int, default=200, help="calibration texts per task")
    s.add_argument(
        "--bias", action=argparse.BooleanOptionalAction, default=True,
        help="FLAP's bias compensation in every expert (default: on; --no-bias for SEAP as "
        "published)",
    )  # fmt: skip
    s.add_argument(
        "--join", action=argparse.BooleanOptionalAction, default=True,
        help="join tasks the router cannot tell apart into one expert (default: on; --no-join "
        "keeps one expert per task)",
    )  # fmt: skip
    _schedule_args(s)

    s = sub.add_parser(
        "maintain",
        help="run the lifecycle policies once (TTL expiry, capacity eviction, promotion "
        "candidates, demotion of stale artifacts)",
    )
    s.add_argument("--user", help="act as this user (default: the application, every cube)")
    s.add_argument("--cube", action="append", dest="cubes")
    s.add_argument("--capacity", type=int, help="archive the least important beyond this")
    s.add_argument("--json", action="store_true", help="print every id, not just counts")

    s = sub.add_parser("audit", help="query the audit log, newest first")
    s.add_argument("--user", help="who asks (non-admins see only what concerns them)")
    s.add_argument("--actor")
    s.add_argument("--action", help="exact, or a prefix ending in * (e.g. 'read:*')")
    s.add_argument("--target")
    s.add_argument("--cube")
    s.add_argument("--since")
    s.add_argument("--until")
    s.add_argument("--limit", type=int, default=50)

    s = sub.add_parser("forget-user", help="erase a user and everything they own")
    s.add_argument("user_id")
    s.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    return p


def _schedule_args(s: argparse.ArgumentParser) -> None:
    s.add_argument("--first", type=int, help="first layers kept dense (logistic schedules)")
    s.add_argument("--last", type=int, help="last layers kept dense (logistic schedules)")


def _schedule(args: argparse.Namespace) -> dict[str, int]:
    return {k: v for k in ("first", "last") if (v := getattr(args, k)) is not None}


def _run(args: argparse.Namespace) -> int:
    if args.command == "demo":
        from .demo import run

        run(Path(args.db).parent if args.db else None)
        return 0
    if args.command == "prune":
        return _prune(args)
    if args.command == "experts":
        return _experts(args)
    settings = None
    if getattr(args, "capacity", None) is not None:
        import dataclasses

        from .core.config import Settings

        settings = dataclasses.replace(Settings.from_env(), cube_capacity=args.capacity)
    opened = (
        MemOS.open_embedded_postgres(args.embedded_pg, settings=settings)
        if args.embedded_pg is not None
        else MemOS.open(args.db, settings=settings)
    )
    with opened as mos:
        cmd = args.command
        if cmd == "create-user":
            print(mos.create_user(args.user_id, role=args.role).id)
        elif cmd == "create-cube":
            print(mos.create_cube(args.name, owner=args.owner).id)
        elif cmd == "grant":
            mos.grant(args.cube, to=args.to, access=args.access)
        elif cmd == "add":
            records: list[Any] = list(args.texts)
            if args.file:
                records += _read_records(args.file)
            if not records:
                raise InvalidInput("nothing to add: pass texts or --file")
            items = mos.ingest(
                records,
                user=args.user,
                cube=args.cube,
                session=args.session,
                kind=args.kind,
                tags=args.tags,
                progress=len(records) > 1,
            )
            print(f"{len(items)} memories stored")
        elif cmd == "search":
            hits = mos.search(
                args.query, user=args.user, k=args.k, cubes=args.cubes, mode=args.mode
            )
            _print_items([h.item for h in hits], args.json, [h.score for h in hits])
        elif cmd == "chat":
            if args.experts is not None:
                mos.use_experts(args.experts)
            reply = mos.chat(
                args.query,
                user=args.user,
                cube=args.cube,
                k=args.k,
                memory=args.memory,
                max_new_tokens=args.max_new_tokens,
            )
            print(reply.text.strip())
            if reply.expert is not None:
                print(f"[expert: {reply.expert}]", file=sys.stderr)
            if args.explain:
                print(json.dumps(reply.plan.describe(), indent=2))
        elif cmd == "explain":
            plan = mos.explain(args.query, user=args.user, cube=args.cube, k=args.k,
                               memory=args.memory)  # fmt: skip
            print(json.dumps(plan.describe(), indent=2, ensure_ascii=False))
        elif cmd == "maintain":
            report = mos.maintain(user=args.user, cubes=args.cubes)
            print(json.dumps(report.describe() if args.json else report.counts(), indent=2))
        elif cmd == "audit":
            for r in mos.audit(
                user=args.user,
                actor=args.actor,
                action=args.action,
                target=args.target,
                cube=args.cube,
                since=args.since,
                until=args.until,
                limit=args.limit,
            ):
                print(
                    f"{r.at:%Y-%m-%d %H:%M:%S} {r.actor or 'root'} {r.action} "
                    f"{r.target or '-'} {r.cube_id or '-'} {json.dumps(r.detail)}"
                )
        elif cmd == "list":
            _print_items(
                mos.list(user=args.user, cube=args.cube, states=args.states, limit=args.limit),
                args.json,
            )
        elif cmd == "history":
            for v in mos.history(args.item_id, user=args.user):
                print(
                    f"v{v.version} {v.changed_at:%Y-%m-%d %H:%M:%S} {v.change:8} "
                    f"by {v.changed_by}: {v.text}"
                )
            for t in mos.transitions(args.item_id, user=args.user):
                print(
                    f"  {t.at:%Y-%m-%d %H:%M:%S} {t.from_state or '-'} -> {t.to_state} "
                    f"({t.reason or ''})"
                )
        elif cmd == "export":
            print(mos.export_cube(args.cube, args.path, user=args.user))
        elif cmd == "import":
            print(mos.import_cube(args.path, owner=args.owner, cube_id=args.cube_id).id)
        elif cmd == "stats":
            print(json.dumps(mos.stats(user=args.user), indent=2))
        elif cmd == "forget-user":
            if not args.yes and input(f"erase {args.user_id!r} and all their data? [y/N] ") != "y":
                return 1
            print(json.dumps(mos.forget_user(args.user_id), indent=2))
    return 0


def _prune(args: argparse.Namespace) -> int:
    """``memos prune``: calibrate on the task, prune, save, optionally score before/after."""
    from .models import evaluation as ev
    from .models.runtime import LocalModel
    from .models.seap import methods, prune
    from .models.seap.speed import compare_speed

    if args.speed < 0 or args.eval < 0:
        raise InvalidInput("--speed and --eval take a count >= 0")
    base = LocalModel.load(args.model)
    texts = ev.calibration_texts(args.task, n=args.calibration)
    pruned, plan = methods.prune(
        base.model,
        base.tokenizer,
        texts,
        args.method,
        args.sparsity,
        source=args.task,
        bias=args.bias,
        sequential=args.sequential,
        **_schedule(args),
    )
    plan.details["base"] = base.fingerprint.to_dict()
    out = prune.save_pruned(pruned, base.tokenizer, plan, args.out)
    report: dict[str, Any] = {
        "out": str(out),
        "method": args.method,
        "bias": plan.bias,
        "sequential": bool(plan.details.get("sequential")),
        "real_sparsity": round(plan.real_sparsity, 6),
        "attn_ffn_params": [prune.count_params(base.model), prune.count_params(pruned)],
    }
    if args.eval:
        task = ev.load_task(args.task, n=args.eval)
        for name, model in (("dense", base.model), ("pruned", pruned)):
            r = ev.evaluate_task(model, base.tokenizer, task)
            report[name] = {"acc": r["acc"], "acc_ci": r["acc_ci"], "gold_nll": r["gold_nll"]}
    if args.speed:
        timed = compare_speed(
            {"dense": base.model, "pruned": pruned}, base.tokenizer, rounds=args.speed
        )
        report["speed"] = {
            "dense_tok_per_s": timed["medians"]["dense"]["tok_per_s"],
            "pruned_tok_per_s": timed["medians"]["pruned"]["tok_per_s"],
            "decode_speedup": timed["speedup"]["pruned"],
            "ttft_ratio": timed["ttft_ratio"]["pruned"],
            "rounds": args.speed,
        }
    print(json.dumps(report, indent=2))
    return 0


def _experts(args: argparse.Namespace) -> int:
    """``memos experts``: one SEAP expert per task or '+'-joined family, and the router."""
    from .models.runtime import LocalModel
    from .models.seap.experts import build_experts, default_dir

    base = LocalModel.load(args.model)
    families = [[x.strip() for x in t.split("+")] for t in args.tasks.split(",") if t.strip()]
    out = args.out or default_dir(base.fingerprint.id, "seap", args.sparsity, args.bias)
    experts = build_experts(
        base,
        families,
        args.sparsity,
        out,
        calibration=args.calibration,
        bias=args.bias,
        join_confused=args.join,
        **_schedule(args),
    )
    accuracy = experts.manifest["router_accuracy"]
    report = {
        "out": str(experts.root),
        "experts": {k: v["tasks"] for k, v in experts.manifest["experts"].items()},
        "real_sparsity": {
            k: round(v["real_sparsity"], 6) for k, v in experts.manifest["experts"].items()
        },
        "bias": {k: v["bias"] for k, v in experts.manifest["experts"].items()},
        "joined": experts.manifest["joined"],
        "router_accuracy": {k: accuracy[k] for k in ("accuracy", "per_task", "confusion")},
    }
    print(json.dumps(report, indent=2))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return _run(args)
    except MemOSError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
