export default defineEventHandler(async (event) => {
  const { user } = await getUserSession(event)
  await clearUserSession(event)
  // The sockets opened with this session end now (4401), not when the tab closes.
  const closed = user ? closeRpcConnections(connection => connection.context.user?.name === user.name) : 0
  return { closed }
})
