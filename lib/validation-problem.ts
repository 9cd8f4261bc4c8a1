/** One FastAPI-shaped validation problem (a 422's `detail` is a list of them): `loc` is the offending field's path. */
export interface ValidationProblem {
  loc: (string | number)[];
  msg: string;
  type: string;
}
