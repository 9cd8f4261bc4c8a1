/**
 * Load generator, run as its own process by the benchmarks (so its CPU is not the server's event loop).
 * Reads a JSON spec on stdin, drives a closed loop of `connections` keep-alive connections spread evenly over
 * `targets` (e.g. both gateways), and prints one JSON result: requests, req/s, p50/p99 (ms), unexpected answers.
 *
 * spec: { targets: string[], scenario, connections, durationS, warmupS, tokens: string[],
 *         courseId, labIds: number[], startOffset?: number, requests?: number, warmupRequests?: number }
 * With `requests` the run is a fixed number of units of work (after `warmupRequests` unrecorded ones) instead of
 * a duration: bench/cost.js compares CPU per request, so both sides must serve the same requests.
 * Scenarios: courses-cached, courses-cold, labs, lab-instances, me, floor (bench/floor.js), start-stop, mixed.
 */
const http = require("node:http");

const spec = JSON.parse(require("node:fs").readFileSync(0, "utf8"));
const { targets, scenario, connections, durationS, warmupS = 0, tokens } = spec;

const perTarget = Math.ceil(connections / targets.length);
const agents = targets.map(() => new http.Agent({ keepAlive: true, maxSockets: perTarget }));

function send(t, method, path, token, body) {
  return new Promise((resolve) => {
    const url = new URL(targets[t] + path);
    const payload = body === undefined ? undefined : JSON.stringify(body);
    const req = http.request(
      {
        host: url.hostname,
        port: url.port,
        path: url.pathname + url.search,
        method,
        agent: agents[t],
        headers: {
          authorization: `Bearer ${token}`,
          ...(payload ? { "content-type": "application/json", "content-length": Buffer.byteLength(payload) } : {}),
        },
      },
      (res) => {
        const chunks = [];
        res.on("data", (c) => chunks.push(c));
        res.on("end", () => resolve({ status: res.statusCode, body: Buffer.concat(chunks) }));
        res.on("error", () => resolve({ status: 0 }));
      },
    );
    req.on("error", () => resolve({ status: 0 }));
    req.end(payload);
  });
}

// Cache-cold course list: (student, limit) pairs; with 300 students × 80 limits a key repeats only after 24,000
// requests. Every limit is above the 20 courses a student sees, so the SQL and the answer stay the same.
const COLD_LIMITS = 80;
let seq = spec.startOffset ?? 0;
const tokenOf = (i) => tokens[i % tokens.length];

/** One unit of work for connection `w`: resolves with the (status, expected) pairs it produced. */
const SCENARIOS = {
  "courses-cached": (w) => [["GET", "/api/v1/courses?offset=0&limit=50&sort=-created_at", tokenOf(w), undefined, 200]],
  "courses-cold": () => {
    const n = seq++;
    const limit = 21 + (Math.floor(n / tokens.length) % COLD_LIMITS);
    return [["GET", `/api/v1/courses?offset=0&limit=${limit}&sort=-created_at`, tokenOf(n), undefined, 200]];
  },
  labs: (w) => [["GET", "/api/v1/labs?offset=0&limit=50", tokenOf(w), undefined, 200]],
  "lab-instances": (w) => [["GET", "/api/v1/lab-instances?offset=0&limit=50", tokenOf(w), undefined, 200]],
  me: (w) => [["GET", "/api/v1/auth/me", tokenOf(w), undefined, 200]],
  // bench/floor.js: a fixed page, no database (the framework's floor per request).
  floor: (w) => [["GET", "/api/v1/floor", tokenOf(w), undefined, 200]],
};

// start+stop: every start uses a (student, lab) pair not used before, so neither the one-active-instance rule nor
// the per-student cap answers 409 (a stopped-but-not-yet-confirmed instance still counts as active).
function nextPair() {
  const n = seq++;
  const student = n % tokens.length;
  const lab = Math.floor(n / tokens.length) % spec.labIds.length;
  return { token: tokens[student], labId: spec.labIds[lab] };
}

const latencies = [];
const statuses = {};
let errors = 0;
let recording = false;

async function timed(t, method, path, token, body, expected) {
  const t0 = process.hrtime.bigint();
  const res = await send(t, method, path, token, body);
  if (recording) {
    latencies.push(Number(process.hrtime.bigint() - t0) / 1e6);
    statuses[res.status] = (statuses[res.status] ?? 0) + 1;
    if (res.status !== expected) errors++;
  }
  return res;
}

async function unit(w, t, name) {
  if (name === "start-stop") {
    const { token, labId } = nextPair();
    const body = { lab_id: labId, course_id: spec.courseId };
    const started = await timed(t, "POST", "/api/v1/lab-instances", token, body, 202);
    if (started.status !== 202) return;
    const { id } = JSON.parse(started.body.toString());
    await timed(t, "POST", `/api/v1/lab-instances/${id}/stop`, token, undefined, 202);
    return;
  }
  if (name === "mixed") {
    // Soak traffic: mostly reads, a start+stop now and then.
    const r = seq % 20;
    const pick = r === 0 ? "start-stop" : ["courses-cached", "courses-cold", "labs", "lab-instances", "me"][r % 5];
    if (pick !== "courses-cold") seq++;
    return unit(w, t, pick);
  }
  for (const [method, path, token, body, expected] of SCENARIOS[name](w)) {
    await timed(t, method, path, token, body, expected);
  }
}

/** Tells the parent (bench/lib.js runLoad, over IPC) a phase ended and waits for its go. */
function handshake(phase) {
  return new Promise((resolve) => {
    process.once("message", () => resolve());
    process.send({ phase });
  });
}

async function main() {
  if (!SCENARIOS[scenario] && scenario !== "start-stop" && scenario !== "mixed") {
    throw new Error(`unknown scenario ${scenario}`);
  }
  const counted = spec.requests !== undefined;
  let until = Date.now() + warmupS * 1000;
  let left = spec.warmupRequests ?? 0;
  const more = () => (counted ? left-- > 0 : Date.now() < until);
  const loop = async (w) => {
    const t = w % targets.length;
    while (more()) await unit(w, t, scenario);
  };
  if (counted ? left > 0 : warmupS > 0) await Promise.all(Array.from({ length: connections }, (_, w) => loop(w)));
  // bench/cost.js reads the servers' CPU time between these two lines (stdin is its signal to go on).
  if (counted) await handshake("warm");
  recording = true;
  const started = process.hrtime.bigint();
  until = Date.now() + durationS * 1000;
  left = spec.requests;
  await Promise.all(Array.from({ length: connections }, (_, w) => loop(w)));
  if (counted) await handshake("done");
  const elapsedS = Number(process.hrtime.bigint() - started) / 1e9;
  latencies.sort((a, b) => a - b);
  const n = latencies.length;
  const pct = (p) => (n ? latencies[Math.min(n - 1, Math.floor((p / 100) * n))] : NaN);
  process.stdout.write(
    JSON.stringify({ requests: n, rps: n / elapsedS, p50: pct(50), p99: pct(99), errors, statuses }),
  );
  for (const a of agents) a.destroy();
  if (process.connected) process.disconnect();
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
