/**
 * A `let x: T` that beforeAll assigns is typed as assigned, yet is still undefined in afterAll when beforeAll
 * failed before it: afterAll reads it through this honest type (`await ifAssigned(p)?.stop()`).
 */
export function ifAssigned<T>(value: T): T | undefined {
  return value;
}
