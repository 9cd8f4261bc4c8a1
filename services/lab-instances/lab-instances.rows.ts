/**
 * Rows of the lab_instances table (schema: platform/migrations/; queried with SQL, no ORM models), declared
 * once as JSON Schema: the TypeScript type, the columns selected and the OpenAPI component come from here.
 */
import { extend, s, type Infer } from "../../lib/schema";
import { INSTANCE_STATUSES } from "./lab-instances.rules";

const id = s.integer({ minimum: 1 });

/** A lab_instances row, as the API shows it (snake_case, ISO times once serialised). */
/** The table row (the API always answers the view below, which carries the names too). */
const LabInstanceRowSchema = s.object(
  {
    id,
    lab_id: id,
    course_id: id,
    student_id: id,
    status: s.enum(INSTANCE_STATUSES),
    celery_task_id: s.nullable(s.string({ description: "The start_lab task's Celery id" })),
    k8s_pod_name: s.nullable(s.string()),
    connection_url: s.nullable(s.string()),
    error: s.nullable(s.string()),
    created_at: s.dateTime(),
    started_at: s.nullable(s.dateTime()),
    stopped_at: s.nullable(s.dateTime()),
    expires_at: s.nullable(s.dateTime()),
    updated_at: s.dateTime(),
  },
  { title: "LabInstanceRow" },
);
export type LabInstanceRow = Infer<typeof LabInstanceRowSchema>;

export const INSTANCE_COLUMNS = Object.keys(LabInstanceRowSchema.properties as object) as (keyof LabInstanceRow)[];

/**
 * What the API answers for an instance (lists, single gets, starts, stops, the status-changed broadcast): the
 * row plus the names a dashboard shows beside it, joined in the same statement (no N+1).
 */
export const LabInstanceViewSchema = extend(
  LabInstanceRowSchema,
  { lab_name: s.string(), course_name: s.string() },
  { title: "LabInstance" },
);
export type LabInstanceView = Infer<typeof LabInstanceViewSchema>;

export const INSTANCE_VIEW_COLUMNS = [...INSTANCE_COLUMNS, "lab_name", "course_name"] as const;

/** GET /lab-instances/{id}/connection: where to connect while the instance runs. */
export const LabConnection = s.object(
  {
    id,
    status: s.enum(["running"]),
    connection_url: s.nullable(s.string()),
    port: s.nullable(
      s.integer({
        minimum: 1,
        maximum: 65535,
        description: "The worker's port, else the URL's explicit port, else its scheme's default",
      }),
    ),
    k8s_pod_name: s.nullable(s.string()),
    started_at: s.nullable(s.dateTime()),
    expires_at: s.nullable(s.dateTime()),
  },
  { title: "LabConnection" },
);
export type LabInstanceConnection = Infer<typeof LabConnection>;
