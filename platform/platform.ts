/**
 * What every service of one broker shares: the validated config and the database pool.
 * Kept per broker (not a module global) so a test can run two nodes in one process.
 */
import type { ServiceBroker } from "moleculer";
import type { Sequelize } from "sequelize";
import type { Config } from "./config";

export interface Platform {
  config: Config;
  sequelize: Sequelize;
}

const platforms = new WeakMap<ServiceBroker, Platform>();

export function attachPlatform(broker: ServiceBroker, platform: Platform): void {
  platforms.set(broker, platform);
}

/** The platform of `broker`, or undefined while it is being constructed (its own $node service is wrapped then). */
export function attachedPlatform(broker: ServiceBroker): Platform | undefined {
  return platforms.get(broker);
}

export function platformOf(broker: ServiceBroker): Platform {
  const p = platforms.get(broker);
  if (!p) throw new Error("No platform attached to this broker: create it with createPlatformBroker()");
  return p;
}
