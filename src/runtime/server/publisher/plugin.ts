import { defineNitroPlugin } from 'nitropack/runtime'
import { closePresence } from '../presence/index'
import { closePublisher, usePublisher } from './index'

export default defineNitroPlugin((nitroApp) => {
  // Created with the server, so Redis is connected before the first publish and a wrong URL shows at boot.
  usePublisher()
  nitroApp.hooks.hook('close', async () => {
    // Members of this instance leave (and others hear of it) while the publisher can still tell them.
    await closePresence()
    await closePublisher()
  })
})
