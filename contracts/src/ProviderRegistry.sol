// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.37;

import {IProviderStatusSink} from "./interfaces/IProviderStatusSink.sol";

/// @notice What the registry asks the DisputeCourt before a stake leaves.
interface IStakeLockSource {
    /// @notice Until when `provider`'s stake must stay (the voucher dispute window after its last
    /// redemption); zero when nothing holds it.
    function voucherLockUntil(address provider) external view returns (uint256);
}

/// @title ProviderRegistry
/// @notice GPU providers register here with a stake. The JobMarket only lets active providers claim
/// jobs and slashes providers proven to have signed two different results for one job, or that
/// let a claimed job run out of time.
/// @dev A stake never leaves while its owner holds work, at no gas to claims: only an active
/// provider (not unstaking) claims, and the market accepts no deadline further than
/// `unstakeCooldown - challengeWindow` ahead, so every job claimed before `requestUnstake` has
/// passed its deadline and its challenge window (disputes are settled on proof) before the cooldown
/// ends.
/// @dev The DisputeCourt (named once by the deployer) may slash too, locks the stake of the parties
/// and jurors of open disputes, and draws jurors weighted by stake: the registry keeps every active
/// provider's stake in a Fenwick (binary indexed) tree, so a change and a draw cost O(log n).
/// @dev Every change of a provider's active status is pushed to the market
/// (`IProviderStatusSink`), which keeps a copy so `claimJob` needs no call here; registration is
/// therefore closed until the market is set.
/// Section order: types, events, errors, constants/immutables, storage, constructor,
/// external functions, views, internal functions.
contract ProviderRegistry {
    // ------------------------------------------------------------------ types

    /// @dev One slot, so `isActive` costs a single storage read.
    struct ProviderRecord {
        uint128 stake;
        // When the stake can be withdrawn; zero while the provider is not unstaking.
        uint64 unstakeAt;
        bool registered;
    }

    // ------------------------------------------------------------------ events

    event MarketSet(address indexed market);
    event CourtSet(address indexed court);
    event ProviderRegistered(address indexed provider, bytes peerId, bytes32 metadataHash, uint256 stake);
    event MetadataUpdated(address indexed provider, bytes32 metadataHash);
    event StakeAdded(address indexed provider, uint256 amount, uint256 stake);
    event UnstakeRequested(address indexed provider, uint256 unstakeAt);
    event StakeWithdrawn(address indexed provider, uint256 amount);
    /// @dev `reward` went to the market, which credits whoever proved the fault.
    event ProviderSlashed(address indexed provider, uint256 amount, uint256 reward, uint256 remainingStake);

    // ------------------------------------------------------------------ errors

    error NotDeployer(address caller);
    error MarketAlreadySet(address market);
    error NotMarket(address caller);
    error NotCourt(address caller);
    error CourtAlreadySet(address court);
    error StakeLocked(address provider, uint256 until);
    error NoStakeToDraw();
    error MarketNotSet();
    error ZeroAddress();
    error AlreadyRegistered(address provider);
    error NotRegistered(address provider);
    error InvalidPeerId(uint256 length);
    error StakeTooLow(uint256 given, uint256 minimum);
    error ZeroAmount();
    error StakeOverflow(uint256 stake);
    error AlreadyUnstaking(address provider, uint256 unstakeAt);
    error NotUnstaking(address provider);
    error CooldownNotOver(uint256 now_, uint256 unstakeAt);
    error InvalidMinStake(uint256 minStake);
    error InvalidCooldown(uint256 cooldown);
    error TransferFailed(address to, uint256 amount);
    error Reentrancy();

    // ------------------------------------------------------------------ constants and immutables

    /// @notice Longest peer id accepted (a secp256k1 identity multihash is 37 bytes).
    uint256 public constant MAX_PEER_ID_LENGTH = 64;
    /// @notice Share of a slashed stake paid to whoever proved the fault, in basis points; the rest
    /// stays locked in this contract for good, so self-reporting never pays.
    uint256 public constant SLASH_REWARD_BPS = 5_000;
    /// @notice Bounds of `unstakeCooldown`: long enough to prove a fault in, short enough to leave.
    uint256 public constant MIN_UNSTAKE_COOLDOWN = 1 minutes;
    uint256 public constant MAX_UNSTAKE_COOLDOWN = 365 days;

    uint256 public immutable minStake;
    uint256 public immutable unstakeCooldown;
    address public immutable deployer;

    // ------------------------------------------------------------------ storage

    address public market;
    /// @notice Stake removed by slashing and not paid out as a reward; never withdrawable.
    uint256 public burnedStake;
    mapping(address provider => ProviderRecord) private _providers;
    mapping(address provider => bytes) private _peerIds;
    mapping(address provider => bytes32) private _metadataHashes;
    /// @notice The DisputeCourt, allowed to slash, lock stakes and draw jurors; zero until named.
    address public court;
    /// @notice Open disputes `provider` is a party or a juror of; its stake cannot leave while nonzero.
    mapping(address provider => uint256 count) public openDisputes;
    /// @notice Sum of the stakes of active providers: the weight jurors are drawn by.
    uint256 public totalWeight;
    /// @notice Providers ever given a place in the tree (places are 1-based and never reused).
    uint256 public providerCount;
    mapping(address provider => uint256 index) private _indices;
    mapping(uint256 index => address provider) private _atIndex;
    mapping(uint256 index => uint256 weight) private _weights;
    mapping(uint256 index => uint256 partialSum) private _tree;
    bool private transient _locked;

    // ------------------------------------------------------------------ constructor

    /// @param minStake_ Smallest stake (wei) an active provider holds; positive, fits 128 bits.
    /// @param unstakeCooldown_ Seconds between `requestUnstake` and `withdrawStake`; the stake stays
    /// slashable meanwhile. 1 minute to 365 days.
    constructor(uint256 minStake_, uint256 unstakeCooldown_) {
        if (minStake_ == 0 || minStake_ > type(uint128).max) revert InvalidMinStake(minStake_);
        if (unstakeCooldown_ < MIN_UNSTAKE_COOLDOWN || unstakeCooldown_ > MAX_UNSTAKE_COOLDOWN) {
            revert InvalidCooldown(unstakeCooldown_);
        }
        minStake = minStake_;
        unstakeCooldown = unstakeCooldown_;
        deployer = msg.sender;
    }

    modifier nonReentrant() {
        if (_locked) revert Reentrancy();
        _locked = true;
        _;
        _locked = false;
    }

    // ------------------------------------------------------------------ external functions

    /// @notice Names the JobMarket allowed to slash. Callable once, by the deployer.
    /// @param market_ The JobMarket address.
    function setMarket(address market_) external {
        if (msg.sender != deployer) revert NotDeployer(msg.sender);
        if (market != address(0)) revert MarketAlreadySet(market);
        if (market_ == address(0)) revert ZeroAddress();
        market = market_;
        emit MarketSet(market_);
    }

    /// @notice Names the DisputeCourt. Callable once, by the deployer.
    /// @param court_ The DisputeCourt address.
    function setCourt(address court_) external {
        if (msg.sender != deployer) revert NotDeployer(msg.sender);
        if (court != address(0)) revert CourtAlreadySet(court);
        if (court_ == address(0)) revert ZeroAddress();
        court = court_;
        emit CourtSet(court_);
    }

    /// @notice Holds `provider`'s stake while a dispute it is a party or juror of is open. Court only.
    function lockStake(address provider) external {
        if (msg.sender != court || msg.sender == address(0)) revert NotCourt(msg.sender);
        openDisputes[provider] += 1;
    }

    /// @notice Releases one `lockStake`. Court only.
    function unlockStake(address provider) external {
        if (msg.sender != court || msg.sender == address(0)) revert NotCourt(msg.sender);
        openDisputes[provider] -= 1;
    }

    /// @notice Registers the caller as a provider, staking `msg.value`.
    /// @param peerId The provider's libp2p peer id (multihash bytes).
    /// @param metadataHash A hash committing to the provider's off-chain metadata.
    function register(bytes calldata peerId, bytes32 metadataHash) external payable {
        if (market == address(0)) revert MarketNotSet();
        ProviderRecord storage record = _providers[msg.sender];
        if (record.registered) revert AlreadyRegistered(msg.sender);
        if (peerId.length == 0 || peerId.length > MAX_PEER_ID_LENGTH) revert InvalidPeerId(peerId.length);
        if (msg.value < minStake) revert StakeTooLow(msg.value, minStake);
        if (msg.value > type(uint128).max) revert StakeOverflow(msg.value);
        record.stake = uint128(msg.value);
        record.unstakeAt = 0;
        record.registered = true;
        _peerIds[msg.sender] = peerId;
        _metadataHashes[msg.sender] = metadataHash;
        emit ProviderRegistered(msg.sender, peerId, metadataHash, msg.value);
        _syncStatus(msg.sender, false);
    }

    /// @notice Replaces the caller's metadata hash.
    /// @param metadataHash The new metadata hash.
    function updateMetadata(bytes32 metadataHash) external {
        if (!_providers[msg.sender].registered) revert NotRegistered(msg.sender);
        _metadataHashes[msg.sender] = metadataHash;
        emit MetadataUpdated(msg.sender, metadataHash);
    }

    /// @notice Adds `msg.value` to the caller's stake. Not allowed while unstaking.
    function addStake() external payable {
        ProviderRecord storage record = _providers[msg.sender];
        bool wasActive = _isActive(record);
        if (!record.registered) revert NotRegistered(msg.sender);
        if (msg.value == 0) revert ZeroAmount();
        if (record.unstakeAt != 0) revert AlreadyUnstaking(msg.sender, record.unstakeAt);
        uint256 stake = uint256(record.stake) + msg.value;
        if (stake > type(uint128).max) revert StakeOverflow(stake);
        record.stake = uint128(stake);
        emit StakeAdded(msg.sender, msg.value, stake);
        _syncStatus(msg.sender, wasActive);
    }

    /// @notice Starts the cooldown after which the whole stake can be withdrawn. The provider stops
    /// being active at once.
    function requestUnstake() external {
        ProviderRecord storage record = _providers[msg.sender];
        if (!record.registered) revert NotRegistered(msg.sender);
        if (record.unstakeAt != 0) revert AlreadyUnstaking(msg.sender, record.unstakeAt);
        uint256 unstakeAt = block.timestamp + unstakeCooldown;
        bool wasActive = _isActive(record);
        record.unstakeAt = uint64(unstakeAt);
        emit UnstakeRequested(msg.sender, unstakeAt);
        _syncStatus(msg.sender, wasActive);
    }

    /// @notice Withdraws the whole stake once the cooldown is over (by then every job the caller
    /// claimed is past its deadline and challenge window), no dispute it is part of is open, and its
    /// last voucher redemption is past the voucher dispute window; deregisters the caller.
    function withdrawStake() external nonReentrant {
        ProviderRecord memory record = _providers[msg.sender];
        if (!record.registered) revert NotRegistered(msg.sender);
        if (record.unstakeAt == 0) revert NotUnstaking(msg.sender);
        if (block.timestamp < record.unstakeAt) revert CooldownNotOver(block.timestamp, record.unstakeAt);
        if (openDisputes[msg.sender] != 0) revert StakeLocked(msg.sender, type(uint256).max);
        if (court != address(0)) {
            uint256 until = IStakeLockSource(court).voucherLockUntil(msg.sender);
            if (block.timestamp < until) revert StakeLocked(msg.sender, until);
        }
        delete _providers[msg.sender];
        delete _peerIds[msg.sender];
        delete _metadataHashes[msg.sender];
        emit StakeWithdrawn(msg.sender, record.stake);
        _send(msg.sender, record.stake);
    }

    /// @notice Removes up to `amount` from `provider`'s stake; half of what is removed is sent to
    /// the caller (which credits whoever proved the fault, as a pull payment), the rest is locked for
    /// good. Only the market and the court may call this. A provider with no stake left (or gone) loses nothing
    /// and the call still succeeds, so a proof against it can still dispute its job.
    /// @param provider The provider at fault.
    /// @param amount The most to slash (wei); capped at the stake.
    /// @return slashed The stake actually removed.
    /// @return reward The part of it sent to the market.
    function slash(address provider, uint256 amount)
        external
        nonReentrant
        returns (uint256 slashed, uint256 reward)
    {
        if (msg.sender == address(0) || (msg.sender != market && msg.sender != court)) revert NotMarket(msg.sender);
        ProviderRecord storage record = _providers[provider];
        if (!record.registered) return (0, 0);
        bool wasActive = _isActive(record);
        uint256 stake = record.stake;
        slashed = amount < stake ? amount : stake;
        reward = slashed * SLASH_REWARD_BPS / 10_000;
        record.stake = uint128(stake - slashed);
        burnedStake += slashed - reward;
        emit ProviderSlashed(provider, slashed, reward, stake - slashed);
        _syncStatus(provider, wasActive);
        _send(msg.sender, reward);
    }

    // ------------------------------------------------------------------ views

    /// @notice The active provider whose stake covers `point` when active stakes are laid end to end
    /// in registration order: drawing `point` uniformly below `totalWeight` picks a provider with
    /// probability proportional to its stake. O(log n).
    /// @param point A number below `totalWeight`.
    function drawProvider(uint256 point) external view returns (address) {
        if (point >= totalWeight) revert NoStakeToDraw();
        uint256 n = providerCount;
        uint256 step = 1;
        while (step <= n >> 1) step <<= 1;
        uint256 position = 0;
        for (; step != 0; step >>= 1) {
            uint256 next = position + step;
            if (next <= n && _tree[next] <= point) {
                position = next;
                point -= _tree[next];
            }
        }
        return _atIndex[position + 1];
    }

    /// @notice The stake `provider` is drawn by: its stake while active, else zero.
    function weightOf(address provider) external view returns (uint256) {
        return _weights[_indices[provider]];
    }

    /// @notice Whether `provider` may take jobs: registered, stake at least `minStake`, not unstaking.
    function isActive(address provider) external view returns (bool) {
        return _isActive(_providers[provider]);
    }

    /// @notice Everything recorded about `provider`.
    function providerRecord(address account)
        external
        view
        returns (bool registered, uint256 stake, uint256 unstakeAt, bytes memory peerId, bytes32 metadataHash)
    {
        ProviderRecord memory record = _providers[account];
        return (record.registered, record.stake, record.unstakeAt, _peerIds[account], _metadataHashes[account]);
    }

    // ------------------------------------------------------------------ internal functions

    function _isActive(ProviderRecord storage record) private view returns (bool) {
        return record.registered && record.unstakeAt == 0 && record.stake >= minStake;
    }

    /// @dev Tells the market when `provider`'s active status differs from `wasActive`, and sets its
    /// draw weight to its stake while active.
    function _syncStatus(address provider, bool wasActive) private {
        ProviderRecord storage record = _providers[provider];
        bool active = _isActive(record);
        _setWeight(provider, active ? record.stake : 0);
        if (active != wasActive) IProviderStatusSink(market).setProviderActive(provider, active);
    }

    function _setWeight(address provider, uint256 weight) private {
        uint256 index = _indices[provider];
        if (index == 0) {
            if (weight == 0) return;
            index = ++providerCount;
            _indices[provider] = index;
            _atIndex[index] = provider;
            // The new node covers (index - lowbit, index]: the earlier part is already in the tree.
            _tree[index] = _prefixSum(index - 1) - _prefixSum(index - _lowbit(index));
        }
        uint256 old = _weights[index];
        if (old == weight) return;
        _weights[index] = weight;
        uint256 n = providerCount;
        if (weight > old) {
            uint256 delta = weight - old;
            totalWeight += delta;
            for (uint256 i = index; i <= n; i += _lowbit(i)) _tree[i] += delta;
        } else {
            uint256 delta = old - weight;
            totalWeight -= delta;
            for (uint256 i = index; i <= n; i += _lowbit(i)) _tree[i] -= delta;
        }
    }

    function _prefixSum(uint256 index) private view returns (uint256 sum) {
        for (uint256 i = index; i != 0; i -= _lowbit(i)) sum += _tree[i];
    }

    function _lowbit(uint256 i) private pure returns (uint256) {
        unchecked {
            return i & (~i + 1);
        }
    }

    function _send(address to, uint256 amount) private {
        if (amount == 0) return;
        (bool ok,) = to.call{value: amount}("");
        if (!ok) revert TransferFailed(to, amount);
    }
}
