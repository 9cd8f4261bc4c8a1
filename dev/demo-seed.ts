/**
 * Demo data for embedded mode, written once (when the demo teacher has no row yet): the demo accounts as
 * users, a course owned by `teacher` with `student` assigned (listed in the catalog, so `student2` can find it and
 * ask to join), an approved lab attached to it, and a lab
 * waiting for approval. Users carry the embedded IdP's `sub`, so a demo login maps onto these rows.
 */
import { QueryTypes, type Sequelize } from "sequelize";
import { DEMO_ACCOUNTS } from "./embedded-idp";

const RESOURCES = JSON.stringify({ cpu: "500m", memory: "512Mi", storage: "1Gi" });

export async function seedDemoData(sequelize: Sequelize): Promise<boolean> {
  const teacher = DEMO_ACCOUNTS.find((a) => a.role === "teacher" && a.login === "teacher");
  if (!teacher) throw new Error("DEMO_ACCOUNTS has no teacher account");
  return sequelize.transaction(async (transaction) => {
    const q = <T extends object>(sql: string, bind: Record<string, unknown> = {}): Promise<T[]> =>
      sequelize.query<T>(sql, { bind, transaction, type: QueryTypes.SELECT });
    const exists = await q<{ id: number }>("SELECT id FROM users WHERE external_id = $sub", { sub: teacher.sub });
    if (exists.length > 0) return false;

    const ids: Record<string, number> = {};
    for (const a of DEMO_ACCOUNTS) {
      const [row] = await q<{ id: number }>(
        `INSERT INTO users (external_id, email, name, role) VALUES ($sub, $email, $name, $role)
         ON CONFLICT (external_id) DO UPDATE SET email = EXCLUDED.email RETURNING id`,
        { sub: a.sub, email: a.email, name: a.name, role: a.role },
      );
      ids[a.login] = row.id;
    }
    const [course] = await q<{ id: number }>(
      "INSERT INTO courses (name, description, owner_id, listed) VALUES ($name, $description, $owner, true) RETURNING id",
      { name: "Introduction to Linux", description: "Demo course: shell, files and processes.", owner: ids.teacher },
    );
    await q("INSERT INTO course_students (course_id, student_id) VALUES ($course, $student) RETURNING course_id", {
      course: course.id,
      student: ids.student,
    });
    const [approved] = await q<{ id: number }>(
      `INSERT INTO labs (name, description, docker_image, resources, network_isolated, status, created_by, approved_by)
       VALUES ('Python basics', 'A Python 3.12 shell with the course material.', 'python:3.12-slim', $res::jsonb, true,
               'approved', $teacher, $admin) RETURNING id`,
      { res: RESOURCES, teacher: ids.teacher, admin: ids.admin },
    );
    await q("INSERT INTO course_labs (course_id, lab_id) VALUES ($course, $lab) RETURNING lab_id", {
      course: course.id,
      lab: approved.id,
    });
    await q(
      `INSERT INTO labs (name, description, docker_image, resources, network_isolated, status, created_by)
       VALUES ('Networking sandbox', 'Two hosts and a router.', 'registry.example.com/autolabs/netlab:1.0', $res::jsonb, true,
               'pending_approval', $teacher) RETURNING id`,
      { res: RESOURCES, teacher: ids.teacher },
    );
    return true;
  });
}
