/**
 * The port of a lab instance's connection (lab-instances service), as its worker reported it. DESIGN's
 * start_lab result has none, so it stays NULL for that payload and the connection answer derives the port from
 * the URL (explicit, else the scheme's default); a worker that sends `port` is believed.
 */
import type { QueryInterface } from "sequelize";
import type { MigrationFn } from "umzug";

const UP: readonly string[] = [
  `ALTER TABLE lab_instances ADD COLUMN connection_port integer
     CONSTRAINT lab_instances_connection_port_check CHECK (connection_port BETWEEN 1 AND 65535)`,
];

const DOWN: readonly string[] = [`ALTER TABLE lab_instances DROP COLUMN connection_port`];

async function runAll(qi: QueryInterface, statements: readonly string[]): Promise<void> {
  await qi.sequelize.transaction(async (transaction) => {
    for (const sql of statements) await qi.sequelize.query(sql, { transaction });
  });
}

export const up: MigrationFn<QueryInterface> = ({ context }) => runAll(context, UP);
export const down: MigrationFn<QueryInterface> = ({ context }) => runAll(context, DOWN);
