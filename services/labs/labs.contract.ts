/** What other services may use of `labs`: the lab as the API shows it (courses lists a course's labs with it). */
export { Lab, type LabRow } from "./labs.rows";
