/**
 * Embedded mode's stand-in for a lab's own web page: the simulated runner's connection URL
 * (`/simulated-lab/<instance id>/<start task id>`) opens this page, which says which lab and instance it
 * stands for, so the demo's Connect button leads somewhere. Served by the gateway only without
 * CELERY_BROKER_URL (a real worker's URLs point at real pods).
 *
 * The start task id in the path is the capability, as a real lab URL's host and token are: the page answers
 * only when it matches the instance's start task, so ids cannot be walked to learn other students' labs.
 */
import type { IncomingMessage, ServerResponse } from "node:http";
import type { ServiceBroker } from "moleculer";
import { LAB_INSTANCES_ACTIONS, type LabInstanceView } from "../lab-instances/lab-instances.contract";
import { systemPrincipal } from "../../lib/principal";

const ID = /^[1-9][0-9]{0,9}$/;
const TASK_ID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

function escapeHtml(text: string): string {
  return text.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

/** The page for one instance (pure: tested through the route, in a browser). */
export function simulatedLabHtml(inst: LabInstanceView): string {
  const lab = escapeHtml(inst.lab_name);
  const course = escapeHtml(inst.course_name);
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>${lab}: simulated lab instance ${inst.id}</title>
<style>body{font-family:sans-serif;max-width:40rem;margin:3rem auto;line-height:1.5}</style></head>
<body><h1 id="lab">${lab}</h1>
<p id="what">Simulated lab instance <strong id="instance">${inst.id}</strong> of lab ${inst.lab_id} in course
${course} (status <span id="status">${escapeHtml(inst.status)}</span>).</p>
<p>AutoLabs runs in embedded mode: no worker started a pod, so this page stands in for the lab's own.</p>
</body></html>
`;
}

function answer(res: ServerResponse, status: number, html: string): void {
  res.setHeader("Content-Type", "text/html; charset=utf-8");
  // Nothing to load: no script, no image; inline style only.
  res.setHeader("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'");
  res.setHeader("Cache-Control", "no-store");
  res.writeHead(status);
  res.end(html);
}

/** The moleculer-web alias handler of `GET /simulated-lab/:id/:task`. */
export function simulatedLabHandler(broker: ServiceBroker) {
  return (req: IncomingMessage, res: ServerResponse, next: (err?: unknown) => void): void => {
    void serve(broker, req, res, next);
  };
}

async function serve(
  broker: ServiceBroker,
  req: IncomingMessage,
  res: ServerResponse,
  next: (err?: unknown) => void,
): Promise<void> {
  {
    const params = (req as IncomingMessage & { $params?: Record<string, unknown> }).$params ?? {};
    const id = typeof params.id === "string" ? params.id : "";
    const task = typeof params.task === "string" ? params.task : "";
    let inst: LabInstanceView | null = null;
    try {
      if (ID.test(id) && TASK_ID.test(task)) {
        inst = await broker
          .call<LabInstanceView, { id: number }>(
            LAB_INSTANCES_ACTIONS.get,
            { id: Number(id) },
            { meta: { user: systemPrincipal("simulated lab page") } },
          )
          .catch((err: unknown) => {
            if ((err as { code?: unknown }).code === 404) return null;
            throw err;
          });
      }
    } catch (err) {
      next(err);
      return;
    }
    if (!inst || inst.celery_task_id !== task) {
      answer(res, 404, "<!doctype html><title>Not found</title><p>No such simulated lab.</p>\n");
      return;
    }
    answer(res, 200, simulatedLabHtml(inst));
  }
}
