import { defineNitroPlugin } from 'nitropack/runtime'
import { closePublisher, usePublisher } from './index'

export default defineNitroPlugin((nitroApp) => {
  // Created with the server, so Redis is connected before the first publish and a wrong URL shows at boot.
  usePublisher()
  nitroApp.hooks.hook('close', closePublisher)
})
