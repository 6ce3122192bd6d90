// libpq, PostgreSQL's C client library. Debian installs the header under
// /usr/include/postgresql; the package's pkg-config entry ("libpq") adds that
// include path.
#include <libpq-fe.h>
