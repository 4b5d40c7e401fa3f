declare module '#auth-utils' {
  interface User {
    name: string
  }
}

export {}
