import { parseMigrateArgs } from "../../main/migrate-args";

describe("migrate-cli arguments", () => {
  it.each([
    [["up"], { kind: "up" }],
    [["status"], { kind: "status" }],
    [["down"], { kind: "down" }],
    [["down", "--to", "0"], { kind: "down", to: 0 }],
    [["down", "--to=0002-task-results"], { kind: "down", to: "0002-task-results" }],
    [["wait"], { kind: "wait", timeoutS: 600 }],
    [["wait", "--timeout", "30"], { kind: "wait", timeoutS: 30 }],
  ])("%j → %j", (args, command) => {
    expect(parseMigrateArgs(args)).toEqual(command);
  });

  it.each([
    [[]],
    [["sideways"]],
    [["up", "now"]],
    [["wait", "--timeout"]],
    [["wait", "--timeout", "0"]],
    [["wait", "--timeout", "-5"]],
    [["wait", "--timeout", "ten"]],
    [["wait", "30"]],
  ])("%j is bad usage", (args) => {
    expect(parseMigrateArgs(args)).toBeUndefined();
  });
});
