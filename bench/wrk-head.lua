-- wrk script for bench/run.sh scenario "head": HEAD instead of GET (docker and containerd ask
-- HEAD of a manifest before they pull it).
wrk.method = "HEAD"
