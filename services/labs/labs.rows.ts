/** Row types of the labs table (schema: platform/migrations/; queried with SQL, no ORM models). */
import type { LabResources, LabStatus } from "./labs.rules";

export interface LabRow {
  id: number;
  name: string;
  description: string;
  docker_image: string;
  resources: LabResources;
  network_isolated: boolean;
  max_lifetime_s: number | null;
  status: LabStatus;
  rejection_reason: string | null;
  created_by: number;
  approved_by: number | null;
  created_at: Date;
  updated_at: Date;
}
