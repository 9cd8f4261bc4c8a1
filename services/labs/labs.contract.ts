/** What other services may use of `labs`: the event broadcast after a lab was created or changed status. */
export const LABS_CHANGED_EVENT = "labs.changed";

export interface LabChanged {
  lab_id: number;
  status: string;
}

/** The lab as the API shows it (courses lists the labs attached to a course with it). */
export { Lab, type LabRow } from "./labs.rows";
