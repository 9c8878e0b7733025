import neostandard from 'neostandard'

export default [
  ...neostandard({ ts: true, ignores: ['dist/**', 'node_modules/**', '.sandbox/**', '.tap/**', 'coverage/**'] }),
  {
    rules: {
      // TypeBox's idiom: a schema constant and its static type share one name.
      '@typescript-eslint/no-redeclare': 'off'
    }
  }
]
