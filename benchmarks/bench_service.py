"""Load test of the submission service on loopback (bounded; not a timed test).

Starts ``assay serve`` and ``--workers`` ``assay worker`` processes on a synthetic challenge
(``--cases`` small cases), then ``--teams`` teams each submit ``--submissions`` times (one
active submission per team: each waits for its previous one) while polling their
submission, quota and the leaderboard. Prints throughput, p50/p99 latency per kind of API
call, HTTP errors, and the final state of every submission (all must be final).

    .venv/bin/python benchmarks/bench_service.py                  # 50 teams x 5, 2 workers
    .venv/bin/python benchmarks/bench_service.py --teams 10 --submissions 2   # quick
"""

from __future__ import annotations

import argparse
import collections
import concurrent.futures
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
import yaml

from assay.service import Service, ServiceDB, build_manifest, issue_token, zip_predictions
from assay.service._server import free_port, wait_until_serving
from assay.service._service import FINAL_STATES
from assay.service._synthetic import write_predictions, write_reference

ASSAY = [sys.executable, "-m", "assay.cli"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--teams", type=int, default=50)
    parser.add_argument("--submissions", type=int, default=5)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--cases", type=int, default=10)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="assay-bench-service-"))
    ref = write_reference(tmp / "ref" / "synth", args.cases)
    db_path = str(tmp / "challenge.db")
    service = Service(ServiceDB(db_path), tmp / "storage")
    service.register_reference(build_manifest("synth", ref))
    teams = [f"team{i:03d}" for i in range(args.teams)]
    config = tmp / "challenge.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "title": "load test",
                "storage": str(tmp / "storage"),
                "teams": teams,
                "phases": [
                    {
                        "name": "open",
                        "reference_set": "synth",
                        "policy": {"n_bootstrap": 200},
                        "quota": {"submissions": args.submissions},
                    }
                ],
            }
        )
    )
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = (tmp / "serve.log").open("wb")
    procs = [
        subprocess.Popen(
            [*ASSAY, "serve", "--db", db_path, "--config", str(config), "--port", str(port)],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    ]
    wait_until_serving(url, procs[0], log=tmp / "serve.log")
    for _ in range(args.workers):
        procs.append(
            subprocess.Popen(
                [*ASSAY, "worker", "--db", db_path, "--reference", f"synth={ref}"],
                stdout=subprocess.DEVNULL,
            )
        )
    tokens = {t: issue_token(service.db, "participant", team=t)[1] for t in teams}
    cases = sorted(httpx.get(url + "/v1/phases/open", timeout=10).json()["manifest"]["cases"])
    archives = []
    for k in range(args.submissions):
        folder = write_predictions(tmp / f"preds{k}", cases, 2.0 / (k + 1), model_seed=k)
        archives.append(zip_predictions(folder))
    latency: dict[str, list[float]] = collections.defaultdict(list)
    errors: collections.Counter[int] = collections.Counter()

    def timed(
        http: httpx.Client, kind: str, method: str, path: str, **kw: object
    ) -> httpx.Response:
        t0 = time.perf_counter()
        r = http.request(method, path, **kw)  # type: ignore[arg-type]
        latency[kind].append(time.perf_counter() - t0)
        if r.status_code >= 500:
            errors[r.status_code] += 1
        return r

    def team_run(team: str) -> list[str]:
        states = []
        with httpx.Client(
            base_url=url, headers={"Authorization": f"Bearer {tokens[team]}"}, timeout=120
        ) as http:
            for k in range(args.submissions):
                r = timed(
                    http,
                    "submit",
                    "POST",
                    "/v1/phases/open/submissions",
                    content=archives[k],
                    headers={"Idempotency-Key": f"{team}-{k}"},
                )
                sid = r.json()["id"]
                while True:
                    view = timed(http, "status", "GET", f"/v1/submissions/{sid}").json()
                    timed(http, "quota", "GET", "/v1/phases/open/quota")
                    timed(http, "leaderboard", "GET", "/v1/phases/open/leaderboard")
                    if view["state"] in FINAL_STATES:
                        states.append(view["state"])
                        break
                    time.sleep(0.25)
        return states

    t0 = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(args.teams) as pool:
        results = list(pool.map(team_run, teams))
    wall = time.perf_counter() - t0
    for proc in procs:
        proc.terminate()
        proc.wait(30)
    log.close()
    states = collections.Counter(s for r in results for s in r)
    total = sum(states.values())
    print(
        f"{args.teams} teams x {args.submissions} submissions, {args.workers} workers, "
        f"{args.cases} cases each: {total} submissions final in {wall:.1f} s "
        f"({total / wall:.2f} submissions/s)"
    )
    print("final states:", dict(states))
    print(f"{'call':<12} {'n':>6} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}")
    for kind, values in latency.items():
        ms = np.array(values) * 1000
        print(
            f"{kind:<12} {len(ms):>6} {np.percentile(ms, 50):>8.1f} {np.percentile(ms, 99):>8.1f} "
            f"{ms.max():>8.1f}"
        )
    print(f"HTTP 5xx: {sum(errors.values())}")
    service.db.close()
    shutil.rmtree(tmp, ignore_errors=True)  # the benchmark's own folder
    if total != args.teams * args.submissions or errors:
        sys.exit("not every submission ended in a final state, or the server failed")


if __name__ == "__main__":
    main()
