import { LineBatcher } from "../../platform/log-output";

function recorder(): { writes: string[]; stream: { write(chunk: string): boolean } } {
  const writes: string[] = [];
  return { writes, stream: { write: (chunk: string) => writes.push(chunk) > 0 } };
}

const nextTurn = () => new Promise((r) => setImmediate(r));

describe("LineBatcher", () => {
  it("writes the lines of one event-loop turn in one write, in order, on the next turn", async () => {
    const { writes, stream } = recorder();
    const batcher = new LineBatcher(stream);
    batcher.push("a\n", false);
    batcher.push("b\n", false);
    batcher.push("c\n", false);
    expect(writes).toEqual([]);
    await nextTurn();
    expect(writes).toEqual(["a\nb\nc\n"]);
    batcher.push("d\n", false);
    await nextTurn();
    expect(writes).toEqual(["a\nb\nc\n", "d\n"]);
  });

  it("an urgent line goes out at once, with every line queued before it", async () => {
    const { writes, stream } = recorder();
    const batcher = new LineBatcher(stream);
    batcher.push("info\n", false);
    batcher.push("error\n", true);
    expect(writes).toEqual(["info\nerror\n"]);
    await nextTurn();
    expect(writes).toEqual(["info\nerror\n"]);
  });

  it("flush empties the queue (what the exit handler does)", () => {
    const { writes, stream } = recorder();
    const batcher = new LineBatcher(stream);
    batcher.flush();
    expect(writes).toEqual([]);
    batcher.push("last words\n", false);
    batcher.flush();
    expect(writes).toEqual(["last words\n"]);
  });
});
