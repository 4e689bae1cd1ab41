"""report.md: the run's headline, one table per target, and what each file really is."""
from __future__ import annotations

from edgekd.pipeline.console import distillation_headline, fmt_ms, fmt_pct, fmt_points
from edgekd.pipeline.reporting.plots import front_name
from edgekd.pipeline.reporting.profiles import profile_lines
from edgekd.pipeline.reporting.recommend import markdown_lines


def rows(report: dict) -> dict[str, list[dict]]:
    """Per target, one row per result with the derived columns the tables and plots show."""
    arts = {a["file"]: a for a in report["artifacts"]}
    models = report["models"]
    out: dict[str, list[dict]] = {}
    for r in report["results"]:
        out.setdefault(r["target"], []).append(r)
    table = {}
    for target, results in out.items():
        ref = next((r for r in results if r["artifact"] == "teacher.pt"), None)
        teacher_size = models["teacher"]["params"] * 4  # fp32 weights: what the eager teacher carries
        teacher_files = [r for r in results if arts.get(r["artifact"], {}).get("model") == "teacher"]
        best = min(teacher_files, key=lambda r: r["latency_ms"]["p50"]) if teacher_files else None
        lines = []
        for r in results:
            a = arts.get(r["artifact"])
            model = a["model"] if a else r["artifact"].removesuffix(".pt")
            size = a["size_bytes"] if a else models.get(model, {}).get("params", 0) * 4
            lines.append({
                "artifact": r["artifact"], "model": model, "format": a["format"] if a else "pytorch",
                "precision": a["precision"] if a else "fp32", "size_bytes": size,
                "params": models.get(model, {}).get("params"), "macs": models.get(model, {}).get("macs"),
                "p50": r["latency_ms"]["p50"], "p95": r["latency_ms"]["p95"], "ci": r["latency_ms"]["p50_ci95"],
                "peak_rss_mb": r["peak_rss_mb"], "model_rss_mb": r.get("model_rss_mb", r.get("rss_increase_mb")),
                "accuracy": r["accuracy"], "n_eval": r.get("n_eval"), "runtime": r["runtime"],
                "d_acc": r["accuracy"] - models["teacher"]["accuracy"],
                "speedup": ref["latency_ms"]["p50"] / r["latency_ms"]["p50"] if ref else None,
                "speedup_file": best["latency_ms"]["p50"] / r["latency_ms"]["p50"] if best else None,
                "size_ratio_file": arts[best["artifact"]]["size_bytes"] / size if best and size else None,
                "threads": r.get("threads", 1), "throttled": bool((r.get("thermal") or {}).get("throttled")),
                "accuracy_on": r.get("accuracy_on", "device"),
                "size_ratio": teacher_size / size if size else None, "audit": a["audit"] if a else None,
                "samples": r.get("samples_ms") or [], "op_profile": r.get("op_profile"),
            })
        table[target] = lines
    return table


def _fmt_ratio(v: float | None) -> str:
    return f"{v:.1f}x" if v else "n/a"


def markdown(report: dict) -> str:
    ds, models = report["dataset"], report["models"]
    out = [f"# edgekd report: {report['run']['name']}", ""]
    headline = distillation_headline(models)
    if headline:
        out += [f"**{headline[0].upper() + headline[1:]}.**", ""]
    out += [f"Dataset `{ds['name']}`: {ds['n_train']} train / {ds['n_test']} test images of shape {ds['input_shape']}, "
            f"{ds['num_classes']} classes. Accuracy is measured by each row's runtime on `data/eval.npz`; latency is "
            "single-sample (batch 1) after warm-up, p50 with the range of the per-process medians. Memory is the peak "
            "of a process that loaded and ran the model, and in brackets the model's part: the peak above the same "
            "process once it had imported the runtime and loaded the eval set. Speed-up "
            "and size ratio are against the teacher's best (fastest) exported file on the same target, and in "
            "brackets against its PyTorch eager reference (size = its fp32 weights): most of the eager gap is the "
            "runtime, not the student.", "",
            "| model | arch | params | MACs | PyTorch accuracy |", "|---|---|---:|---:|---:|"]
    out += [f"| {m} | {v['arch']} | {v['params']:,} | {v['macs']:,} | {fmt_pct(v['accuracy'])} |" for m, v in models.items()]
    skipped: dict[str, list[dict]] = {}
    for row in report.get("skipped", []):
        skipped.setdefault(row["target"], []).append(row)
    for target, lines in rows(report).items():
        out += ["", f"## Target `{target}`", "", f"![accuracy vs p50 on {target}](plots/{front_name(target)})", ""]
        for line in markdown_lines(report.get("recommendations", {}), target):
            out += [line, ""]
        out += ["| artifact | format | precision | threads | size KiB | params | MACs | p50 (per-process range) | p95 | "
                "peak MB (model) | accuracy | Δ acc vs teacher | speed-up (vs eager) | size ratio (vs eager) |",
                "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for r in lines:
            memory = ("not measured" if r["peak_rss_mb"] is None else f"{r['peak_rss_mb']:.0f}" +
                      (f" (+{r['model_rss_mb']:.1f})" if r["model_rss_mb"] is not None else ""))
            hot = " ⚠ throttled" if r["throttled"] else ""
            host = " (host)" if r["accuracy_on"] == "host" else ""
            out.append(f"| {r['artifact']} | {r['format']} | {r['precision']} | {r['threads']} | "
                       f"{r['size_bytes'] / 1024:,.1f} | {_fmt_count(r['params'])} | {_fmt_count(r['macs'])} | "
                       f"{fmt_ms(r['p50'])}{hot} ({fmt_ms(r['ci'][0])}–{fmt_ms(r['ci'][1])}) | {fmt_ms(r['p95'])} | "
                       f"{memory} | {fmt_pct(r['accuracy'])}{host} | {fmt_points(r['d_acc'])} | "
                       f"{_fmt_ratio(r['speedup_file'])} ({_fmt_ratio(r['speedup'])}) | "
                       f"{_fmt_ratio(r['size_ratio_file'])} ({_fmt_ratio(r['size_ratio'])}) |")
        for row in skipped.pop(target, []):
            out.append(f"\nNot measured on `{target}`: {row['artifact']} ({row['reason']}).")
        if any(r["accuracy_on"] == "host" for r in lines):
            out.append("\nAccuracy marked (host) was measured on the host with the same file: the device's tool scores "
                       "nothing.")
    for t in report.get("targets", []):
        if t.get("status") not in (None, "ok"):
            out += ["", f"## Target `{t['target']}`: not measured", "",
                    f"{t['status']} after {t.get('attempts', 1)} attempt(s): {t.get('error', '')}"]
    for target, missed in skipped.items():
        out += ["", f"## Target `{target}`", ""] + [f"Not measured: {row['artifact']} ({row['reason']})." for row in missed]
    out += profile_lines(rows(report))
    out += stale_lines(report.get("stale", []))
    out += int8_lines(report)
    out += _distillation_lines(report)
    out += ["", "## What each file is (read back from the file)", "",
            "| file | kind | weights | weight bits | activations | input | granularity | ops | ops computing in float |",
            "|---|---|---|---:|---|---|---|---:|---|"]
    for a in report["artifacts"]:
        au = a["audit"]
        out.append(f"| {a['file']} | {au['kind']} | {'/'.join(au['weight_dtypes'])} | {au.get('weight_bits') or '-'} | "
                   f"{'/'.join(au['activation_dtypes'])} | {au['input_dtype']} | {au['granularity'] or '-'} | "
                   f"{au['op_count']} | {', '.join(au.get('float_ops', [])) or 'none'} |")
    return "\n".join(out) + "\n"


def int8_lines(report: dict) -> list[str]:
    """How each int8 file was made (PTQ or QAT), its drop before and after, the training it cost, and
    per target its p50 next to the same model's fp32 file of the same runtime."""
    int8 = [a for a in report["artifacts"] if a["precision"] == "int8"]
    if not int8:
        return []
    p50 = {(r["target"], r["artifact"]): r["latency_ms"]["p50"] for r in report.get("results", [])}
    targets = sorted({t for t, _ in p50})
    fp32 = {(a["model"], a["format"]): a["file"] for a in report["artifacts"] if a["precision"] == "fp32"}
    out = ["", "## How the int8 files were made (`export.int8_method`)", "",
           "PTQ: post-training calibration on train samples. QAT: quantization-aware training with an fp32 model "
           "supervising (the teacher for the student, the model's own fp32 copy otherwise). `auto` trains only where "
           "PTQ's drop on the validation split was not within `export.max_int8_drop` and PTQ lost samples there, "
           "and keeps another file only when it ranks higher there: a better paired verdict, or the same verdict "
           "without losing samples. Drops are on the test split, against the same model's PyTorch fp32 accuracy.", "",
           "| file | method | PTQ drop | kept file's drop | QAT training s | layers in float | " +
           " | ".join(f"p50 on {t} (fp32 file)" for t in targets) + " |",
           "|---|---|---:|---:|---:|---|" + "---:|" * len(targets)]
    for a in int8:
        attempts = (a.get("quantization") or {}).get("attempts", [])
        ptq = next((x for x in attempts if x["method"] == "ptq"), None)
        method = a.get("int8_method", "ptq")  # reports written before int8_method existed: PTQ was all there was
        kept = next((x for x in attempts if x["method"] == method), None)
        seconds = sum(x["train_seconds"] for x in attempts)
        twin = fp32.get((a["model"], a["format"]))
        speeds = [f"{fmt_ms(p50[(t, a['file'])])} ({fmt_ms(p50[(t, twin)]) if (t, twin) in p50 else '-'})"
                  if (t, a["file"]) in p50 else "-" for t in targets]
        floats = (f"{', '.join(kept['float_layers'])} of {kept['layers']} (+{(kept['size_bytes'] - ptq['size_bytes']) / 1024:.1f} "
                  "KiB)" if kept and kept.get("float_layers") and ptq else "none")
        out.append(f"| {a['file']} | {method} | {fmt_points(-ptq['drop']) if ptq else 'not tried'} | "
                   f"{fmt_points(-kept['drop']) if kept else '-'} | {seconds:.1f} | {floats} | " + " | ".join(speeds) + " |")
    return out


def stale_lines(stale: list[dict]) -> list[str]:
    """Results of files that have been re-created or removed since they were measured: listed, never used."""
    if not stale:
        return []
    out = ["", "## Stale results (not used)", "",
           "These were measured on files that are no longer the run's (their sha256 differs from the file there now); "
           "no table, file to ship or gate uses them.", "", "| target | file | measured | why |", "|---|---|---|---|"]
    out += [f"| {s['target']} | {s['artifact']} | {_when(s.get('measured_at'))} | {s['why']} |" for s in stale]
    out += ["", "Re-measure with " + ", ".join(sorted({f"`edgekd bench RUN --target {s['target']}`" for s in stale})) + "."]
    return out


def _when(stamp) -> str:
    import datetime as dt

    if not isinstance(stamp, (int, float)):
        return "-"
    return dt.datetime.fromtimestamp(stamp, dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def _fmt_count(v: int | None) -> str:
    return "-" if v is None else f"{v:,}"


def _distillation_lines(report: dict) -> list[str]:
    """Missing classes and their bias correction, hint losses, and a sweep of this run's teacher."""
    from edgekd.pipeline.sweep import table_lines

    d, out = report.get("distillation", {}), []
    bias = d.get("bias_correction")
    if bias:
        labels = [str(i) for i in range(len(bias["test_errors_before"]))]
        out += ["", "## Classes missing from the transfer set", "",
                f"The student was distilled on classes {d['transfer_classes']} only. The output biases of "
                f"{bias['classes']} were raised by {bias['shift']:+.2f}, chosen on the validation split "
                f"(val accuracy {fmt_pct(bias['val_accuracy_before'])} → {fmt_pct(bias['val_accuracy_after'])}); "
                f"test accuracy {fmt_pct(bias['test_accuracy_before'])} before the correction.", "",
                "| class | " + " | ".join(labels) + " | all |", "|---|" + "---:|" * (len(labels) + 1),
                "| test errors before | " + " | ".join(map(str, bias["test_errors_before"])) +
                f" | {sum(bias['test_errors_before'])} |",
                "| test errors after | " + " | ".join(map(str, bias["test_errors_after"])) +
                f" | {sum(bias['test_errors_after'])} |"]
    hints = d.get("hints")
    if hints:
        losses = hints["loss_by_epoch"]
        out += ["", "## Hint (feature) distillation", "",
                "Pairs (student ← teacher, weight): " + "; ".join(f"{h['student']} ← {h['teacher']} ({h['weight']})"
                                                               for h in hints["pairs"]) +
                f". Hint loss per epoch {losses[0]:.4g} → {losses[-1]:.4g} ({len(losses)} epochs); the "
                f"{hints['regressor_params']:,} regressor parameters are not in the exported files."]
    sweep = report.get("sweep")
    if sweep:
        out += ["", "## Sweep of this teacher's students (`sweep.json`, plot `plots/sweep.png`)", "",
                *table_lines(sweep)]
    return out
