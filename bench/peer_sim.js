// Runs the JavaScript BFT-Simulator (DSN 2022) in bench/sim_speed.py's shape and prints one
// JSON line: simulated PBFT messages per wall second, measured on this machine now.
//
// Why this exists: bench/sim_speed.py compares medbft's simulator with that peer. Figures
// measured on another day do not compare with figures measured today on a machine whose speed
// drifts (this one's moved 2x between days), so `sim_speed.py --peer DIR` runs the peer side by
// side, case by case, and gives both ratios. This file is ours; the peer is not part of
// medbft and is never vendored: clone it outside the project and install its packages
// (docs/benchmarks.md, "The peer, side by side").
//
//   node bench/peer_sim.js PEER_DIR N SECONDS
//
// Shape: N correct replicas, PBFT, constant 10 ms links (mean 0.01 s, std 0), no faults, no
// log files. The peer simulates one agreement per run and starts afresh; this repeats runs
// until SECONDS of wall time have passed (at least three runs) and counts every message the
// peer's network delivered, as its own result records (`totalMsgCount`). Wall time covers the
// runs only, JIT warm-up included (medbft's cases include their start-up too). The peer's
// logger deletes and recreates ./log in the working directory: run this from a scratch one
// (sim_speed.py does).
'use strict';

const path = require('path');

function main(argv) {
    if (argv.length !== 3) {
        console.error('usage: node bench/peer_sim.js PEER_DIR N SECONDS');
        return 2;
    }
    const dir = path.resolve(argv[0]);
    const n = Number(argv[1]);
    const budget = Number(argv[2]);
    if (!Number.isInteger(n) || n < 4 || !(budget > 0)) {
        console.error(`N must be an integer >= 4 and SECONDS > 0 (got ${argv[1]}, ${argv[2]})`);
        return 2;
    }
    // The peer's modules read this one config object when they load (require caches it),
    // so the shape is set on it before the simulator is required.
    const config = require(path.join(dir, 'config.js'));
    Object.assign(config, {
        nodeNum: n, byzantineNodeNum: 0, protocol: 'pbft', lambda: 3,
        networkDelay: { mean: 0.01, std: 0 }, logToFile: false, attacker: 'fail-stop',
        repeatTime: 1,
    });
    const Simulator = require(path.join(dir, 'simulator.js'));
    const sim = new Simulator(config);
    const start = process.hrtime.bigint();
    let wall = 0;
    // The peer's own `startSimulation` loop (runOnce, reset), bounded by time instead of a
    // count of runs.
    while (sim.simulationResults.length < 3 || wall < budget) {
        sim.runOnce();
        sim.reset();
        wall = Number(process.hrtime.bigint() - start) / 1e9;
    }
    const results = sim.simulationResults;
    const messages = results.reduce((sum, r) => sum + r.totalMsgCount, 0);
    const simMs = results.reduce((sum, r) => sum + r.latency, 0);
    console.log(JSON.stringify({
        n, runs: results.length, messages, wall_s: wall, sim_s: simMs / 1000,
        msgs_per_wall_s: messages / wall,
        peak_rss_mb: process.resourceUsage().maxRSS / 1024,
        node: process.version,
    }));
    return 0;
}

process.exitCode = main(process.argv.slice(2));
