/**
 * Where the integration tests find PostgreSQL, Redis and RabbitMQ. `npm test` (test/support/test-run.ts) sets
 * these to throwaway servers of its own unless the environment already names them; run jest directly and they
 * fall back to the machine's servers on the default ports.
 */
export const PG_ADMIN_URL = process.env.TEST_PG_ADMIN_URL ?? "postgres://postgres@127.0.0.1:5432/postgres";
export const AMQP_URL = process.env.TEST_AMQP_URL ?? "amqp://guest:guest@127.0.0.1:5672";
/** The Redis server; its database (3) is the one for tests that need no database of their own. */
export const REDIS_URL = process.env.TEST_REDIS_URL ?? "redis://127.0.0.1:6379/3";

/**
 * Database `db` of the test Redis. Each kind of test keeps its keys in its own database so they never meet:
 * 3 nodes, 5 Celery conformance, 6 outbox, 7 sessions, 8 caches, 9 the lab lifecycle.
 */
export function redisUrl(db: number): string {
  const url = new URL(REDIS_URL);
  url.pathname = `/${db}`;
  return url.toString();
}
