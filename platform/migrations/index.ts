/**
 * Every migration, in order. Listed explicitly (no glob) so the same list works from ts-jest (.ts sources)
 * and from the compiled dist/ (.js), and a forgotten import is a compile error, not a silently skipped file.
 * Names are stored in schema_migrations: never rename or reorder a migration that has shipped.
 */
import type { QueryInterface } from "sequelize";
import type { RunnableMigration } from "umzug";
import * as m0001 from "./0001-initial-schema";
import * as m0002 from "./0002-task-results";
import * as m0003 from "./0003-access-requests-any-course";
import * as m0004 from "./0004-course-catalog";
import * as m0005 from "./0005-task-trace-context";
import * as m0006 from "./0006-lab-instance-port";

export const migrations: ReadonlyArray<RunnableMigration<QueryInterface>> = [
  { name: "0001-initial-schema", up: m0001.up, down: m0001.down },
  { name: "0002-task-results", up: m0002.up, down: m0002.down },
  { name: "0003-access-requests-any-course", up: m0003.up, down: m0003.down },
  { name: "0004-course-catalog", up: m0004.up, down: m0004.down },
  { name: "0005-task-trace-context", up: m0005.up, down: m0005.down },
  { name: "0006-lab-instance-port", up: m0006.up, down: m0006.down },
];
