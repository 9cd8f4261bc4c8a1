/**
 * Rows of the labs table (schema: platform/migrations/; queried with SQL, no ORM models), declared once as
 * JSON Schema (type and OpenAPI component).
 */
import { s, type Infer } from "../../lib/schema";
import { LAB_STATUSES } from "./labs.rules";

const id = s.integer({ minimum: 1 });

/** Resources as stored: what parseResources accepted (the request's grammar is in RESOURCES_SCHEMA). */
const Resources = s.object(
  { cpu: s.string(), memory: s.string(), storage: s.string() },
  { title: "LabResources", description: "Kubernetes quantities per instance" },
);

export const Lab = s.object(
  {
    id,
    name: s.string({ minLength: 1, maxLength: 200 }),
    description: s.nullable(s.string({ maxLength: 5000, description: "null: cleared" })),
    docker_image: s.string({ maxLength: 255 }),
    resources: Resources,
    network_isolated: s.boolean(),
    max_lifetime_s: s.nullable(s.integer({ minimum: 60, description: "null: the platform's LAB_MAX_LIFETIME_S" })),
    status: s.enum(LAB_STATUSES),
    rejection_reason: s.nullable(s.string()),
    created_by: id,
    approved_by: s.nullable(id),
    created_at: s.dateTime(),
    updated_at: s.dateTime(),
  },
  { title: "Lab" },
);
export type LabRow = Infer<typeof Lab>;
