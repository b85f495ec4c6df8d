"""`medbft ledger RESULTS_DIR QUERY`: questions about the ledger a run saved.

Why this exists: after a run, a teacher or auditor asks the ledger what happened: where a
unit went (`trace --serial`), who is exposed by a lot (`recall-exposure --lot`), who touched a
patient's data (`access-log --patient`), which consents are in force (`consents --patient`),
and whether the saved ledger, the replicas' digests and the off-chain documents all agree
(`verify`, exit code 1 if not). `--json` prints machine-readable output. The same answers are
a Python API: `node.ledger.load_ledger(dir)` with `trace`, `recall_exposure`, `access_log`,
`active_consents`, and `medbft.apps.verify_results(dir)`. Issue 16 added `claims` (with the
consent each paid claim was paid under), `studies` (research answers, released or
suppressed), `cases` (SSCCs and their units) and `excursions` (cold-chain readings).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from rich.console import Console

from medbft.errors import UsageError
from medbft.results import RunFileError, read_json_object

__all__ = ["register"]


def register(sub: Any) -> None:
    p = sub.add_parser("ledger", help="query the final ledger saved by a run")
    p.add_argument("results", help="a run's results directory (holds ledger.json)")
    q = p.add_subparsers(dest="query", required=True)
    t = q.add_parser("trace", help="the custody chain of one serialised unit")
    t.add_argument("--serial", required=True, help="SGTIN EPC URI, urn:epc:id:sgtin:...")
    r = q.add_parser("recall-exposure", help="stock per custodian and patients, for a lot")
    r.add_argument("--lot", required=True)
    a = q.add_parser("access-log", help="audit entries about a patient")
    a.add_argument("--patient", required=True, help="patient id (patient-1) or pseudonym")
    c = q.add_parser("consents", help="consents in force for a patient at the last block")
    c.add_argument("--patient", required=True)
    cl = q.add_parser("claims", help="insurance claims: billed items, decision, the consent "
                                     "a paid claim was paid under")
    cl.add_argument("--claim", help="one claim id (default: all)")
    q.add_parser("studies", help="approved studies and every research answer (cohort, minimum, "
                                 "released or suppressed)")
    cs = q.add_parser("cases", help="cases (SSCCs), their units and where they are")
    cs.add_argument("--case", help="one SSCC, urn:epc:id:sscc:... (default: all)")
    ex = q.add_parser("excursions", help="cold-chain excursions: readings, ranges, quarantine")
    ex.add_argument("--lot", help="one lot (default: all)")
    q.add_parser("verify", help="chain integrity, replica digests, off-chain documents")
    for parser in (t, r, a, c, *q.choices.values()):
        if not any(x.dest == "json" for x in parser._actions):
            parser.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(handler=handle)


_LOAD_ERRORS = (ArithmeticError, AttributeError, LookupError, TypeError, ValueError)


def _load(results: str) -> Any:
    from node.ledger import load_ledger

    path = Path(results)
    if not path.is_dir():
        raise UsageError(f"{results}: not a directory; expected a run's results directory")
    if not (path / "ledger.json").exists():
        raise UsageError(f"{path / 'ledger.json'}: missing (was it a ledger run? app: kv runs "
                         f"save no ledger)")
    read_json_object(path / "ledger.json", "the ledger.json object a ledger run writes",
                     {"genesis": (dict,), "snapshot": (dict,)})
    try:
        return load_ledger(path)
    except _LOAD_ERRORS as exc:
        raise RunFileError(f"{path / 'ledger.json'}: malformed ledger "
                           f"({type(exc).__name__}: {exc})") from None


def _check_verify_files(path: Path) -> None:
    """ledger_digests.json (required) and offchain.json (when there), checked before
    `verify_results` reads them."""
    digests = path / "ledger_digests.json"
    saved = read_json_object(digests, "an object of replica -> {digest, height}")
    for nid, entry in saved.items():
        if not isinstance(entry, dict) or not isinstance(entry.get("digest"), str) \
                or not isinstance(entry.get("height"), int):
            raise RunFileError(f"{digests}: {nid} is not an object with a digest (string) and "
                               f"a height (integer)")
    offchain = path / "offchain.json"
    if not offchain.exists():
        return
    docs = read_json_object(offchain, "an object with records and events",
                            optional={"records": (dict,), "events": (dict,)})
    for key, item in docs.get("records", {}).items():
        try:
            bytes.fromhex(item["salt"])
            if "resource" not in item:
                raise KeyError("resource")
        except (KeyError, TypeError, ValueError):
            raise RunFileError(f"{offchain}: record {key} has no hex salt and resource") \
                from None
    for key, event in docs.get("events", {}).items():
        if not isinstance(event, dict):
            raise RunFileError(f"{offchain}: event {key} is not an object")


def handle(args: argparse.Namespace, console: Console, err: Console) -> int:
    from medbft.apps import verify_results
    from node.ledger import access_log, active_consents, recall_exposure, trace

    if args.query == "verify":
        path = Path(args.results)
        _load(args.results)
        _check_verify_files(path)
        try:
            report = verify_results(path)
        except _LOAD_ERRORS as exc:
            raise RunFileError(f"{path}: ledger.json, ledger_digests.json or offchain.json "
                               f"malformed ({type(exc).__name__}: {exc})") from None
        _print(console, args, report, _verify_lines)
        return 0 if report["ok"] else 1
    ledger = _load(args.results)
    if args.query == "trace":
        answer = trace(ledger, args.serial)
        if answer is None:
            raise UsageError(f"serial {args.serial!r} is not on the ledger")
        _print(console, args, answer, _trace_lines)
    elif args.query == "recall-exposure":
        answer = recall_exposure(ledger, args.lot)
        if answer is None:
            raise UsageError(f"lot {args.lot!r} is not on the ledger")
        _print(console, args, answer, _exposure_lines)
    elif args.query == "access-log":
        _print(console, args, access_log(ledger, args.patient), _log_lines)
    elif args.query in _PARTNER_QUERIES:
        _partner_query(console, args, ledger)
    else:
        _print(console, args, active_consents(ledger, args.patient), _consent_lines)
    return 0


_PARTNER_QUERIES = ("claims", "studies", "cases", "excursions")


def _partner_query(console: Console, args: argparse.Namespace, ledger: Any) -> None:
    """`claims`, `studies`, `cases`, `excursions` (issue 16); a named claim, case or lot the
    ledger does not know is a usage error."""
    from node.ledger import cases, claims, excursions, studies

    if args.query == "claims":
        answer = claims(ledger, args.claim)
        if args.claim and not answer:
            raise UsageError(f"claim {args.claim!r} is not on the ledger")
        _print(console, args, answer, _claim_lines)
    elif args.query == "studies":
        _print(console, args, studies(ledger), _study_lines)
    elif args.query == "cases":
        answer = cases(ledger, args.case)
        if args.case and not answer:
            raise UsageError(f"case {args.case!r} is not on the ledger")
        _print(console, args, answer, _case_lines)
    else:
        if args.lot and ledger.state.get("lots", args.lot) is None:
            raise UsageError(f"lot {args.lot!r} is not on the ledger")
        _print(console, args, excursions(ledger, args.lot), _excursion_lines)


def _claim_lines(items: list[dict[str, Any]]) -> list[str]:
    if not items:
        return ["no claims"]
    out = []
    for c in items:
        paid = ""
        if c["status"] == "approved":
            paid = (f"  paid under {c['consent_at_payment']} ("
                    + ("in force" if c["consent_in_force_at_payment"] else "NOT IN FORCE") + ")")
        elif c["status"] == "denied":
            paid = f"  denied: {c['reason_code']}"
        out.append(f"{c['claim_id']}  {c['provider']} -> {c['insurer']}  {c['patient']}  "
                   f"{len(c['record_ids'])} record(s) {len(c['epcs'])} unit(s)  "
                   f"{c['status']}{paid}")
    return out


def _study_lines(items: list[dict[str, Any]]) -> list[str]:
    if not items:
        return ["no studies"]
    out = []
    for s in items:
        out.append(f"{s['study_id']}  {s['researcher']} ({s['research_org']})  approved by "
                   f"{s['approved_by']}  minimum cohort {s['min_cohort']}  "
                   f"{len(s['answers'])} answer(s)")
        out += [f"  {a['query_id']}  #{a['height']}  {a['measure']} with {a['resource_type']}: "
                + (f"{a['value']}" if a["released"] else "suppressed")
                + f"  (cohort {a['cohort']})" for a in s["answers"]]
    return out


def _case_lines(items: list[dict[str, Any]]) -> list[str]:
    if not items:
        return ["no cases"]
    return [f"{c['case']}  {len(c['units'])} units  {c['status']}  packed by {c['packed_by']} "
            f"(block {c['packed_height']})  now: "
            + ", ".join(f"{w['custodian']} {w['disposition']}"
                        + (f" -> {w['to']}" if w["to"] else "") for w in c["where"])
            for c in items]


def _excursion_lines(items: list[dict[str, Any]]) -> list[str]:
    if not items:
        return ["no cold-chain excursions"]
    return [f"{x['excursion']}  {x['time']}  lot {x['lot']}  {x['reading_c']} C outside "
            f"{x['range_c'][0]}..{x['range_c'][1]} C  by {x['by']}"
            + ("  QUARANTINED the lot" if x["quarantined_lot"] else "")
            + ("" if x["lot_quarantined_now"] else "  (since cleared)") for x in items]


def _print(console: Console, args: argparse.Namespace, answer: Any, lines: Any) -> None:
    if args.json:
        console.print(json.dumps(answer, indent=2), markup=False, highlight=False)
        return
    for line in lines(answer):
        console.print(line, markup=False, highlight=False)


def _trace_lines(t: dict[str, Any]) -> list[str]:
    out = [f"{t['epc']}  gtin {t['gtin']}  lot {t['lot']}",
           f"custodian {t['custodian']}, {t['disposition']}"
           + (f" -> {t['in_transit_to']}" if t["in_transit_to"] else "")
           + (f"  in case {t['in_case']}" if t.get("in_case") else "")
           + (f"  [{t['blocked'].upper()}]" if t["blocked"] else "")]
    for e in t["events"]:
        extra = e.get("to") or e.get("patient") or e.get("case") or ""
        out.append(f"  #{e['height']}.{e['index']}  {e['time']}  {e['event']:<24} "
                   f"{e['by']:<12} {extra}")
    for a in t["counterfeit_alerts"]:
        out.append(f"  COUNTERFEIT SUSPECTED: duplicate commissioning by {a['by']} "
                   f"(block {a['height']}, {a['incident']})")
    return out


def _exposure_lines(x: dict[str, Any]) -> list[str]:
    recall = x["recall"]
    out = [f"lot {x['lot']}  gtin {x['gtin']}  expiry {x['expiry']}  {x['units']} units  "
           + (f"recall {recall['recall_id']} class {recall['class']} ({recall['status']})"
              if recall else "not recalled")]
    out += [f"  in stock at {org}: {n}" for org, n in x["in_stock"].items()]
    out += [f"  in transit to {org}: {n}" for org, n in x["in_transit_to"].items()]
    out += [f"  {what} at {org}: {n}" for what, by in x["used"].items()
            for org, n in by.items()]
    out.append(f"  patients who received a unit: {len(x['patients'])}")
    out += [f"    {p['patient']}  {p['epc']}  by {p['by']}  {p['time']}" for p in x["patients"]]
    return out


def _log_lines(entries: list[dict[str, Any]]) -> list[str]:
    if not entries:
        return ["no audit entries"]
    return [f"#{e['height']}.{e['index']}  {e['time']}  {e['actor']:<14} {e['action']:<18} "
            f"{e['decision']:<8} {e['rule']}" for e in entries]


def _consent_lines(consents: list[dict[str, Any]]) -> list[str]:
    if not consents:
        return ["no consent in force"]
    return [f"{c['consent_id']}  {c['patient']} -> {c['grantee']}  {','.join(c['actions'])} "
            f"for {','.join(c['purposes'])}  (granted in block {c['granted_height']})"
            for c in consents]


def _verify_lines(r: dict[str, Any]) -> list[str]:
    out = [(f"{'OK' if r['ok'] else 'FAILED'}: {r['chain']['blocks']} blocks, "
           f"{r['chain']['audit_entries']} audit entries, {r['chain']['events']} events")]
    out += [f"  chain: {p}" for p in r["chain"]["problems"]]
    d = r["digests"]
    out.append(f"  replica digests: {'agree' if d['agree'] else 'DISAGREE'} at height "
               f"{d['height']} ({', '.join(d['replicas'])}); saved ledger "
               f"{'matches' if d['saved_matches'] else 'DOES NOT MATCH'}")
    o = r["offchain"]
    out.append(f"  off-chain records: {o['records_ok']} match, {o['records_superseded']} "
               f"superseded, {o['records_not_anchored']} not anchored (rejected), "
               f"{o['records_mismatch']} MISMATCH")
    out.append(f"  off-chain EPCIS events: {o['events_ok']} hash correctly, "
               f"{o['events_on_chain']} on the chain, {o['events_bad']} BAD")
    return out
