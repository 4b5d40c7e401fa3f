import { z } from 'zod'

export default defineEventHandler(async (event) => {
  const { name } = await readValidatedBody(event, z.object({ name: z.string().trim().min(1).max(40) }).parse)
  await setUserSession(event, { user: { name } })
  return { ok: true }
})
