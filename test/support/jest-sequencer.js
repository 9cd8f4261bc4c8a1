// The API-conformance check runs last: it validates the answers every earlier test file recorded.
const Sequencer = require("@jest/test-sequencer").default;

const LAST = /openapi-conformance\.test\.ts$/;

class ConformanceLastSequencer extends Sequencer {
  sort(tests) {
    const sorted = super.sort(tests);
    return [...sorted.filter((t) => !LAST.test(t.path)), ...sorted.filter((t) => LAST.test(t.path))];
  }
}

module.exports = ConformanceLastSequencer;
